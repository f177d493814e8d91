# A minimal QMP client for guests/test-under-qemu.sh's checkers: connect (waiting for QEMU to create
# the socket), negotiate, run commands, and wait for a text in the guest's serial output.
import json, socket, time

def connect(sock_path, deadline):
    """Returns qmp(cmd, **args) -> the command's return (or error) object."""
    while True:
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(sock_path); break
        except OSError:
            if time.time() > deadline: raise SystemExit("no QMP socket")
            time.sleep(0.05)
    f = s.makefile("rw")
    def qmp(cmd, **args):
        f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r: return r.get("return", r)
    f.readline(); qmp("qmp_capabilities")
    return qmp

def wait_for_output(out_path, text, deadline):
    while text not in open(out_path).read():
        if time.time() > deadline: raise SystemExit(f"no {text!r} output")
        time.sleep(0.05)
