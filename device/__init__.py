"""fifolab device model: the FIFO peripheral behind QEMU's ivshmem-doorbell.

Modules::

    regs       register and queue layout (the Python half of the spec)
    errors     the error hierarchy
    guestmem   guest-physical address -> memoryview of the guest RAM file (q35 layout)
    fifo       bounded byte ring buffer
    core       FifoDevice: the steps and the FIFO policy; no sockets, no fds
    bar2       BAR2 register access in single stores, fence()
    queue      Queue: one descriptor queue (chains, cancel flags, used entries), Request
    datapath   DataPath: bytes between requests and the FIFO(s), cut-through
    completion Completer: a done request's used entry, now or when due
    interrupts Interrupts: the INT_RAISED/INT_ACKED/INT_ENABLE rule, coalescing
    inject     Injector: what each armed fault does at the hook points
    hostport   HostPort: a wired device's host end
    ivshmem    IvshmemServer: QEMU's ivshmem server protocol, shared memory, eventfds
    listener   Acceptor: accept without spinning when out of descriptors (back-off)
    ratelimit  LogLimiter: log lines a peer can multiply, a few per key per interval
    wire       HostWire: the host end of a wired device, a raw-byte Unix socket
    faults     fault kinds, hook points, FaultSet (armed faults), Flood; no I/O
    commands   QMP command table: commands with argument schemas, validated uniformly
    qmp        QmpServer: QMP framing, sessions, negotiation, events (no commands)
    monitor    Monitor: the model's QMP commands (queries, fault injection)
    service    one device = server + core; serve() runs several in one event loop (+ QMP)
    cli        python -m device
"""
