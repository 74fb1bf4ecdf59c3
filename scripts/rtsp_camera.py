#!/usr/bin/python3
"""A real RTSP camera on this machine: serve an H.264 mp4 over RTSP with gst-rtsp-server.

Runs under Debian's own python3 (it needs python3-gi and gir1.2-gst-rtsp-server-1.0,
not the project's venv):

    /usr/bin/python3 scripts/rtsp_camera.py samples/sample.mp4 --port 8554 --path /cam
    streamer run rtsp://127.0.0.1:8554/cam --show

Each client gets the clip from its start, paced in real time (the clock of the
server's pipeline). Tests use it as a camera they can stop, restart and freeze.
Binds 127.0.0.1 unless --host says otherwise. Prints "ready rtsp://..." once serving.
With --log FILE, appends one line per client connection ("connection from IP"): tests count
a client's attempts with it.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="an mp4 with an H.264 video track")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/cam", help="mount point, e.g. /cam")
    parser.add_argument("--user", default=None, help="require basic auth with this user (and --password)")
    parser.add_argument("--password", default=None)
    parser.add_argument("--log", default=None, help="append a line per client connection to this file")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )')
    factory.set_shared(False)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if args.log:
        def connected(_server, client):
            with open(args.log, "a") as log:
                log.write(f"connection from {client.get_connection().get_ip()}\n")

        server.connect("client-connected", connected)
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://{args.host}:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
