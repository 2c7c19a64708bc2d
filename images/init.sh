#!/bin/busybox sh
# /init of the fifolab guest: mount the basics, load the virtio console and the
# fifolab driver, then start qemu-ga on its virtio-serial port (the harness's
# command channel).  Kernel command line switches:
#   fifolab.noload  do not insmod fifolab.ko (the tutorial loads its own)
#   fifolab.shell   run an interactive shell on the console; poweroff when it exits
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run /var /root
/bin/busybox --install -s
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /var/run /var/tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ln -sf /proc/self/fd /dev/fd
# Every kernel message reaches the console log the harness watches.
echo 8 > /proc/sys/kernel/printk
hostname fifolab

cmdline=$(cat /proc/cmdline)
for m in $(cat /etc/fifolab/modules); do
	insmod "/lib/modules/$m.ko" || echo "fifolab-init: insmod $m failed" > /dev/console
done
case " $cmdline " in
*" fifolab.noload "*) ;;
*) insmod /lib/modules/fifolab.ko || echo "fifolab-init: insmod fifolab failed" > /dev/console ;;
esac
# insmod returns once the PCI probes have run: the devices are up (`fifolab bench` times this).
echo "fifolab-init: driver loaded" > /dev/console

# virtio_console probes asynchronously: wait (up to 10 s) for the agent's port.
port=
for i in $(seq 200); do
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
	done
	[ -n "$port" ] && [ -e "$port" ] && break
	sleep 0.05
done
if [ -n "$port" ]; then
	qemu-ga -m virtio-serial -p "$port" -t /run -f /run/qemu-ga.pid &
else
	echo "fifolab-init: no guest agent port" > /dev/console
fi
# A shell on the virtio console (/dev/hvc0) for `fifolab shell` into a lab that is up.
if [ -e /dev/hvc0 ]; then
	(while :; do setsid sh -c 'exec sh -l </dev/hvc0 >/dev/hvc0 2>&1'; sleep 0.2; done) &
fi
echo "fifolab-init: ready" > /dev/console

case " $cmdline " in
*" fifolab.shell "*)
	echo 4 > /proc/sys/kernel/printk
	cat /etc/motd
	setsid cttyhack sh -l
	poweroff -f ;;
esac
while :; do sleep 3600; done
