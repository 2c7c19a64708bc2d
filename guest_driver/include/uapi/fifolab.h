/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * fifolab.h - what user programs of /dev/fifolabN may include.
 *
 * ioctls of the fifolab character device (guest_driver/fifolab_chrdev.c; the
 * README's "ioctls" table).  Besides these the device answers FIONREAD (int:
 * bytes a read would get now, as on a pipe); any other command fails with
 * ENOTTY.
 * 32-bit programs on a 64-bit kernel use the same numbers (compat_ioctl).
 */
#ifndef _UAPI_FIFOLAB_H
#define _UAPI_FIFOLAB_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define FIFOLAB_IOC_MAGIC	0xF1

/*
 * Empty the FIFO (the book's globalfifo FIFO_CLEAR).  The device is reset:
 * every byte it held is dropped, and every request pending in the driver
 * (a blocked read or write, a libaio or io_uring request) ends with
 * ECANCELED, or with the count it had moved.  No error is reported to the
 * open files for it (it was asked for).  Returns once the device is back.
 */
#define FIFOLAB_IOC_CLEAR	_IO(FIFOLAB_IOC_MAGIC, 0x01)

/* The FIFO's capacity in bytes (wired devices: of each direction's FIFO). */
#define FIFOLAB_IOC_GET_DEPTH	_IOR(FIFOLAB_IOC_MAGIC, 0x02, __u32)

/* Free bytes: how much a write could put into the FIFO now. */
#define FIFOLAB_IOC_GET_SPACE	_IOR(FIFOLAB_IOC_MAGIC, 0x03, __u32)

#endif /* _UAPI_FIFOLAB_H */
