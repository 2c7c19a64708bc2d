"""fifolab device model: the FIFO peripheral behind QEMU's ivshmem-doorbell.

Modules::

    regs       register and queue layout (the Python half of the spec)
    errors     the error hierarchy
    guestmem   guest-physical address -> memoryview of the guest RAM file (q35 layout)
    fifo       bounded byte ring buffer
    core       FifoDevice: the device's behaviour; no sockets, no fds
    ivshmem    IvshmemServer: QEMU's ivshmem server protocol, shared memory, eventfds
    wire       HostWire: the host end of a wired device, a raw-byte Unix socket
    service    one device = server + core; serve() runs several in one event loop
    cli        python -m device
"""
