// rz-blk: block device requests busybox cannot make, for the device tests
// (tests/linux/devices_in_host.sh). Static, runs in the guest kit's initramfs.
//
// usage: rz-blk zeroout DEVICE OFFSET LENGTH   BLKZEROOUT (the kernel sends
//                                              WRITE_ZEROES when the disk offers it)
//        rz-blk discard DEVICE OFFSET LENGTH   BLKDISCARD
//        rz-blk flush DEVICE                   fsync (a FLUSH request when the
//                                              disk has a volatile cache)
// OFFSET and LENGTH are in bytes, multiples of 512. Exit status 0 on success,
// 1 on failure (with the error on stderr), 2 on usage errors.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static uint64_t num(const char* s) {
  char* end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *end) {
    fprintf(stderr, "rz-blk: bad number '%s'\n", s);
    exit(2);
  }
  return v;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: rz-blk zeroout|discard DEVICE OFFSET LENGTH | rz-blk flush DEVICE\n");
    return 2;
  }
  const char* op = argv[1];
  int fd = open(argv[2], O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "rz-blk: open %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  int rc;
  if (!strcmp(op, "flush") && argc == 3) {
    rc = fsync(fd);
  } else if ((!strcmp(op, "zeroout") || !strcmp(op, "discard")) && argc == 5) {
    uint64_t range[2] = {num(argv[3]), num(argv[4])};
    rc = ioctl(fd, !strcmp(op, "zeroout") ? BLKZEROOUT : BLKDISCARD, range);
  } else {
    fprintf(stderr, "rz-blk: bad arguments\n");
    return 2;
  }
  if (rc < 0) {
    fprintf(stderr, "rz-blk: %s %s: %s\n", op, argv[2], strerror(errno));
    return 1;
  }
  return 0;
}
