"""GPUs: where a GPU fault (Xid, lost GPU, zero VRAM, orphaned memory) is detected and answered.

Observe (I/O): `nvml` (every NVML call, under a deadline), `monitor` (NVML readings on their own
thread), `xid_events` (NVML's Xid event stream), `kernel_log` (Xid lines from the kernel log at
start), `pid_map` (GPU process to container through /proc). Judge (pure): `readings` (what NVML
showed: GPUs, processes, driver state, PCI bus IDs), `xid` (the Xid table and
its verdict), `marks` (quarantine, drain and reset marks, and the response to an Xid), `vram`
(is a model still in GPU memory), `assignment` (which GPUs a container uses), `orphans` (GPU
processes no running container owns), `counter_trend` (an error counter's trend and when it
reaches its limit), `status_view` (the GPUs as status shows them), `findings` (what one cycle
found), `probation` (a released GPU's verified return). Act (I/O): `xid_responder` (Xids and lost
GPUs answered), `mark_book` (the marks in force, alerts said once), `orphan_watch` (orphans said
once, the opt-in kill), `reset` (the opt-in GPU reset), `driver_state` (the driver's state, said
once), `maintenance_watch` (counter samples in the journal, the "schedule maintenance" alert),
`return_watch` (probations carried out: the canaries, the journal, a failing GPU marked again),
`score_journal` (a GPU's health score journaled when it moves). `supervisor` composes them and
drives the GPU side of each cycle of the loop.
"""

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py).
PURE_MODULES: tuple[str, ...] = (
    "xid",
    "marks",
    "vram",
    "assignment",
    "findings",
    "orphans",
    "status_view",
    "readings",
    "health_score",
    "probation",
    "counter_trend",
)
