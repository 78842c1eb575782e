"""GPUs: where a GPU fault (Xid, lost GPU, zero VRAM, orphaned memory) is detected and answered.

Observe (I/O): `nvml` (every NVML call, under a deadline), `monitor` (NVML readings on their own
thread), `xid_events` (NVML's Xid event stream), `kernel_log` (Xid lines from the kernel log at
start), `pid_map` (GPU process to container through /proc). Judge (pure): `xid` (the Xid table and
its verdict), `marks` (quarantine, drain and reset marks, and the response to an Xid), `vram`
(is a model still in GPU memory), `assignment` (which GPUs a container uses). Act (I/O): `reset`
(the opt-in GPU reset). `supervisor` drives the GPU side of each cycle of the loop.
"""

PURE_MODULES: tuple[str, ...] = ("xid", "marks", "vram", "assignment", "findings")  # no I/O, time passed in (tests/unit/test_purity.py)
