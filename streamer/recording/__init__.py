"""Recordings that survive a crash: durable files, fragmented mp4, segments, recover and resume.

- `files`: the partial files every output is written to (names unique across runs, an owner lock),
  and `DurableFile`, which hands each muxed piece to the OS in one write.
- `lines`: `JsonLines`, JSON records written whole and flushed at once (the detections log, event
  logs), and `read_json_lines`, which drops a torn last line with a note.
- `fragments`: fragmented mp4 while writing (a fragment per keyframe), trimming a torn tail, joining
  parts into one moov-first mp4.
- `retention`: `--retain 7d,50GB` parsed into `Retention`.
- `segments`: a live camera's recording, in one file or in segments (`CAM/YYYY-MM-DD/HH-MM-SS.mp4`)
  with an index and retention; it goes on (and says so) when the disk fills or the folder vanishes.
- `resume`: the manifest and checkpoints of a file run, and how `--resume` continues it.
- `recover`: `streamer recover PATH`: what a kill left, turned into finished files.

See docs/recording.md.
"""
