// Command replay publishes a VP8 IVF file and an Opus OGG file into a LiveKit room as they
// are, without decoding or encoding them: a publisher that costs a few tenths of a point of a
// core per stream, where the Python SDK's encodes every frame. The benchmarks use it to load a
// monitor with more rooms than a 2-core host could also encode.
//
// Usage: replay -url ws://... -video clip.ivf -audio clip.ogg (token in $REPLAY_TOKEN)
// The files are replayed from the start each time they end, until SIGTERM or SIGINT.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"

	lksdk "github.com/livekit/server-sdk-go/v2"
)

func main() {
	url := flag.String("url", "", "LiveKit server URL")
	video := flag.String("video", "", "VP8 in IVF")
	audio := flag.String("audio", "", "Opus in OGG")
	fps := flag.Float64("fps", 25, "the video's frame rate")
	flag.Parse()
	token := os.Getenv("REPLAY_TOKEN")
	if *url == "" || *video == "" || *audio == "" || token == "" {
		log.Fatal("replay: -url, -video, -audio and $REPLAY_TOKEN are all needed")
	}
	room, err := lksdk.ConnectToRoomWithToken(*url, token, lksdk.NewRoomCallback(), lksdk.WithAutoSubscribe(false))
	if err != nil {
		log.Fatalf("replay: join: %v", err)
	}
	defer room.Disconnect()
	frame := time.Duration(float64(time.Second) / *fps)
	go publish(room, *video, webrtc.MimeTypeVP8, frame, "video")
	go publish(room, *audio, webrtc.MimeTypeOpus, 20*time.Millisecond, "audio")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

// publish keeps one track of the file published, again from its start whenever it ends.
func publish(room *lksdk.Room, file, mime string, frame time.Duration, name string) {
	for {
		done := make(chan struct{})
		track, err := lksdk.NewLocalFileTrack(file,
			lksdk.ReaderTrackWithMime(mime),
			lksdk.ReaderTrackWithFrameDuration(frame),
			lksdk.ReaderTrackWithOnWriteComplete(func() { close(done) }))
		if err != nil {
			log.Fatalf("replay: %s: %v", file, err)
		}
		pub, err := room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: name})
		if err != nil {
			log.Fatalf("replay: publish %s: %v", file, err)
		}
		<-done
		if err := room.LocalParticipant.UnpublishTrack(pub.SID()); err != nil {
			log.Printf("replay: unpublish %s: %v", file, err)
		}
	}
}
