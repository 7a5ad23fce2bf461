"""Every Prometheus metric name syncmon exports (shared/DESIGN.md), in one place.

Dashboards, alert rules and tests read these names; the exporter renders exactly these.
"""

from __future__ import annotations

AV_OFFSET = "syncmon_av_offset_seconds"
AV_OFFSET_CONFIDENCE = "syncmon_av_offset_confidence"
AV_OFFSET_ABS = "syncmon_av_offset_abs_seconds"
AV_DRIFT = "syncmon_av_drift_seconds_per_minute"

VIDEO_FRAMES = "syncmon_video_frames_total"
VIDEO_DROPPED = "syncmon_video_frames_dropped_total"
VIDEO_DUPLICATED = "syncmon_video_frames_duplicated_total"
VIDEO_FREEZES = "syncmon_video_freezes_total"
VIDEO_FREEZE_SECONDS = "syncmon_video_freeze_seconds_total"
VIDEO_PAUSES = "syncmon_video_pauses_total"
VIDEO_FRAME_INTERVAL = "syncmon_video_frame_interval_seconds"
VIDEO_JITTER = "syncmon_video_jitter_seconds"
VIDEO_FPS = "syncmon_video_fps"
VIDEO_HARMONIC_FPS = "syncmon_video_harmonic_fps"

AUDIO_GAP_SECONDS = "syncmon_audio_gap_seconds_total"
LIP_STILL_SECONDS = "syncmon_lip_still_seconds_total"
LIP_STILL_EPISODES = "syncmon_lip_still_episodes_total"
FACE_FRAMES = "syncmon_face_frames_total"
FACE_ERRORS = "syncmon_face_errors_total"
# the content estimator's windows by result: measured, unmeasured (the voice spoke, no offset
# came), no_speech (session.WINDOW_RESULTS)
CONTENT_WINDOWS = "syncmon_content_windows_total"
# from the avatar joining (as the monitor saw it) to its first audio / first video frame
AVATAR_STARTUP = "syncmon_avatar_startup_seconds"
AUDIO_CONCEALED_SAMPLES = "syncmon_audio_concealed_samples_total"
# turns (--turns): a user's end of speech -> the avatar's voice (path="audio") and its mouth
# (path="video"); a user talking over the avatar -> the avatar quiet
TURN_RESPONSE = "syncmon_turn_response_seconds"
INTERRUPTIONS = "syncmon_interruptions_total"
INTERRUPTION_STOP = "syncmon_interruption_stop_seconds"
LABEL_PATH = "path"

# 1 when viewers lip-sync the avatar's audio and video (one WebRTC stream: sync_streams), 0 when
# they play each as it arrives; absent until the receiver's stats say
VIEWER_SYNC = "syncmon_viewer_sync"

RTP_JITTER = "syncmon_rtp_jitter_seconds"
RTP_PACKETS_LOST = "syncmon_rtp_packets_lost_total"
JITTER_BUFFER_DELAY = "syncmon_jitter_buffer_delay_seconds"

ROOM_CONNECTED = "syncmon_room_connected"
TRACK_UP = "syncmon_track_up"
LAST_FRAME_TIMESTAMP = "syncmon_last_frame_timestamp_seconds"
ROOMS_REJECTED = "syncmon_rooms_rejected_total"
# rooms this process monitors, and its cap (--max-rooms): their ratio is the load a worker
# reports to LiveKit's dispatch, and what a HorizontalPodAutoscaler scales workers on
ROOMS = "syncmon_rooms"
ROOMS_MAX = "syncmon_rooms_max"
# not exported by syncmon: the pods metric prometheus-adapter derives from ROOMS / ROOMS_MAX
# (deploy/kubernetes/prometheus-adapter-rules.yaml) for the worker's HorizontalPodAutoscaler
LOAD_RATIO = "syncmon_load_ratio"
RECONNECTS = "syncmon_reconnects_total"
MALFORMED = "syncmon_malformed_total"
COLLECT_ERRORS = "syncmon_collect_errors_total"
TASK_RESTARTS = "syncmon_task_restarts_total"
# the monitor's own lag behind an avatar's picture (a host short of CPU), and the frames it shed
# to stay within MAX_BACKLOG_S of it: never counted as the avatar's drops or freezes
MONITOR_BACKLOG = "syncmon_monitor_backlog_seconds"
MONITOR_FRAMES_SHED = "syncmon_monitor_frames_shed_total"
# 1 while a monitor of this process is over 1 s behind its picture, or shed frames within the
# last 5 minutes: a worker then reports itself full to dispatch and refuses new rooms
OVERLOADED = "syncmon_overloaded"
# syncmon worker --processes N: the processes serving rooms, and each one's answer to a scrape
WORKER_PROCESSES = "syncmon_worker_processes"
WORKER_PROCESS_UP = "syncmon_worker_process_up"

LABEL_ROOM = "room"
LABEL_PARTICIPANT = "participant"
LABEL_METHOD = "method"
LABEL_KIND = "kind"
LABEL_WHAT = "what"

OFFSET_ABS_BUCKETS = (0.005, 0.015, 0.03, 0.045, 0.06, 0.09, 0.125, 0.185, 0.25, 0.35, 0.5)
TURN_RESPONSE_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0)
INTERRUPTION_STOP_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
FRAME_INTERVAL_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.067, 0.08, 0.1, 0.15, 0.2, 0.5, 1.0)

# syncmon.instrument's OTel metrics as the OTel Prometheus exporter renders them (dots to
# underscores, unit suffix, _total on counters); labels lk_room_name, lk_participant_identity,
# lk_track_sid, queue (runtime queues) and the generator's configuration
AGENT_PROCESSING_TIME = "syncmon_agent_processing_time_seconds"
AGENT_SENDER_SKEW = "syncmon_agent_sender_av_skew_seconds"
# how far the skew gauge's audio leave may be off (0: known; a 10 ms tick per chunk the send
# schedule had to place)
AGENT_SENDER_SKEW_UNCERTAINTY = "syncmon_agent_sender_av_skew_uncertainty_seconds"
AGENT_SENDER_SKEW_ABS = "syncmon_agent_sender_av_skew_abs_seconds"
AGENT_AUDIO_BACKLOG = "syncmon_agent_audio_backlog_seconds"
AGENT_SYNC_VIDEO_QUEUE = "syncmon_agent_sync_video_queue"
AGENT_AUDIO_SOURCE_QUEUED = "syncmon_agent_audio_source_queued_seconds"
AGENT_RUNTIME_QUEUE = "syncmon_agent_runtime_queue"
AGENT_RUNTIME_QUEUE_CAPACITY = "syncmon_agent_runtime_queue_capacity"
AGENT_FRAMES = "syncmon_agent_frames_total"
AGENT_UTTERANCES = "syncmon_agent_utterances_total"
# a reply's audio into the avatar to its first picture leaving (span events on avatar.utterance)
AGENT_FIRST_FRAME_LATENCY = "syncmon_agent_first_frame_latency_seconds"
AGENT_LABEL_ROOM = "lk_room_name"
AGENT_LABEL_PARTICIPANT = "lk_participant_identity"
