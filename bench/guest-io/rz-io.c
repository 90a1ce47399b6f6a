// rz-io: block device throughput and IOPS for bench/nested-io, built as a
// static binary so that it runs in the guest kit's busybox initramfs (and, for
// a look at the physical limit, on a host).
//
// usage: rz-io [options] MODE TARGET
//   seqread    read TARGET from offset 0 in blocks of -b bytes (default 1 MiB)
//   seqwrite   write TARGET from offset 0 in blocks of -b bytes, then fsync;
//              the time includes the fsync
//   randread   -b byte reads (default 4096) at random aligned offsets, each
//              thread keeping one read in flight (queue depth = -j threads)
// Options:
//   -b BYTES    block size
//   -s BYTES    bytes to cover (seq modes; default: the whole device or file,
//               rounded down to a whole block)
//   -t SECONDS  randread: run this long (default 10); seq modes: stop early
//               after this long (default: no limit)
//   -n COUNT    randread: stop after COUNT reads in all (default: no limit)
//   -j THREADS  randread: threads (default 1, i.e. queue depth 1)
//   -S SEED     randread: seed of the offsets (default 1)
//   -B          buffered I/O (no O_DIRECT; for files on tmpfs)
// Prints one line on stdout:
//   RZIO mode=M target=T bs=N direct=0|1 threads=N bytes=N ops=N secs=S
//        mibps=X iops=Y lat_us=Z
// (lat_us: mean time per operation seen by one thread). Exit status 0, or 1 on
// an I/O error (the message says which operation at which offset), 2 on usage.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

struct config {
  const char* mode;
  const char* target;
  size_t bs;
  uint64_t bytes;  // 0: the whole target
  double secs;     // 0: no time limit
  uint64_t count;  // randread: 0 = no limit
  unsigned threads;
  uint64_t seed;
  int direct;
};

struct worker {
  const struct config* cfg;
  int fd;
  uint64_t blocks;  // number of bs-sized blocks in the target
  uint64_t ops;     // done by this thread
  uint64_t limit;   // this thread's share of -n (0: none)
  double deadline;
  int failed;
  pthread_t thread;
  unsigned index;
};

static void usage(void) {
  fprintf(stderr,
          "usage: rz-io [-b BYTES] [-s BYTES] [-t SECONDS] [-n COUNT] [-j THREADS] [-S SEED] [-B]\n"
          "             seqread|seqwrite|randread TARGET\n");
  exit(2);
}

static uint64_t target_size(int fd, const char* path) {
  struct stat st;
  if (fstat(fd, &st) < 0) {
    fprintf(stderr, "rz-io: fstat %s: %s\n", path, strerror(errno));
    exit(1);
  }
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
      fprintf(stderr, "rz-io: BLKGETSIZE64 %s: %s\n", path, strerror(errno));
      exit(1);
    }
    return size;
  }
  return (uint64_t)st.st_size;
}

static void* aligned_buffer(size_t bs, unsigned char fill_seed) {
  void* buf = NULL;
  if (posix_memalign(&buf, 4096, bs) != 0) {
    fprintf(stderr, "rz-io: cannot allocate %zu bytes\n", bs);
    exit(1);
  }
  // Non-zero, non-repeating content (writes must not be compressible zero pages).
  unsigned char* p = buf;
  uint32_t x = 0x9e3779b9u ^ fill_seed;
  for (size_t i = 0; i < bs; i++) {
    x = x * 1664525u + 1013904223u;
    p[i] = (unsigned char)(x >> 24);
  }
  return buf;
}

// Sequential read or write of [0, bytes) in bs blocks.
static int run_seq(const struct config* cfg, int fd, uint64_t bytes, int write_mode, uint64_t* done_ops,
                   double* secs) {
  void* buf = aligned_buffer(cfg->bs, 7);
  double t0 = now(), deadline = cfg->secs > 0 ? t0 + cfg->secs : 0;
  uint64_t off = 0, ops = 0;
  while (off < bytes) {
    ssize_t n = write_mode ? pwrite(fd, buf, cfg->bs, (off_t)off) : pread(fd, buf, cfg->bs, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n != (ssize_t)cfg->bs) {
      fprintf(stderr, "rz-io: %s of %zu bytes at offset %llu: %s\n", write_mode ? "pwrite" : "pread", cfg->bs,
              (unsigned long long)off, n < 0 ? strerror(errno) : "short transfer");
      free(buf);
      return -1;
    }
    off += cfg->bs;
    ops++;
    if (deadline > 0 && (ops & 7) == 0 && now() >= deadline) break;
  }
  if (write_mode && fsync(fd) < 0) {
    fprintf(stderr, "rz-io: fsync: %s\n", strerror(errno));
    free(buf);
    return -1;
  }
  *secs = now() - t0;
  *done_ops = ops;
  free(buf);
  return 0;
}

static void* rand_worker(void* arg) {
  struct worker* w = arg;
  const struct config* cfg = w->cfg;
  void* buf = aligned_buffer(cfg->bs, (unsigned char)w->index);
  uint64_t x = (cfg->seed + w->index * 0x9E3779B97F4A7C15ull) | 1;
  for (;;) {
    if (w->limit && w->ops >= w->limit) break;
    if ((w->ops & 15) == 0 && w->deadline > 0 && now() >= w->deadline) break;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t block = (x * 0x2545F4914F6CDD1Dull) % w->blocks;
    off_t off = (off_t)(block * cfg->bs);
    ssize_t n = pread(w->fd, buf, cfg->bs, off);
    if (n < 0 && errno == EINTR) continue;
    if (n != (ssize_t)cfg->bs) {
      fprintf(stderr, "rz-io: pread of %zu bytes at offset %lld: %s\n", cfg->bs, (long long)off,
              n < 0 ? strerror(errno) : "short transfer");
      w->failed = 1;
      break;
    }
    w->ops++;
  }
  free(buf);
  return NULL;
}

static int run_rand(const struct config* cfg, int fd, uint64_t size, uint64_t* done_ops, double* secs) {
  uint64_t blocks = size / cfg->bs;
  if (blocks == 0) {
    fprintf(stderr, "rz-io: %s is smaller than one block\n", cfg->target);
    return -1;
  }
  struct worker* w = calloc(cfg->threads, sizeof *w);
  if (!w) return -1;
  double t0 = now();
  for (unsigned i = 0; i < cfg->threads; i++) {
    w[i] = (struct worker){.cfg = cfg, .fd = fd, .blocks = blocks, .index = i};
    w[i].deadline = cfg->secs > 0 ? t0 + cfg->secs : 0;
    if (cfg->count) w[i].limit = cfg->count / cfg->threads + (i < cfg->count % cfg->threads ? 1 : 0);
    int e = pthread_create(&w[i].thread, NULL, rand_worker, &w[i]);
    if (e) {
      fprintf(stderr, "rz-io: pthread_create: %s\n", strerror(e));
      exit(1);
    }
  }
  uint64_t ops = 0;
  int failed = 0;
  for (unsigned i = 0; i < cfg->threads; i++) {
    pthread_join(w[i].thread, NULL);
    ops += w[i].ops;
    failed |= w[i].failed;
  }
  *secs = now() - t0;
  *done_ops = ops;
  free(w);
  return failed ? -1 : 0;
}

int main(int argc, char** argv) {
  struct config cfg = {.threads = 1, .seed = 1, .direct = 1, .secs = -1};
  int opt;
  while ((opt = getopt(argc, argv, "b:s:t:n:j:S:B")) != -1) {
    switch (opt) {
      case 'b': cfg.bs = (size_t)parse_size(optarg); break;
      case 's': cfg.bytes = parse_size(optarg); break;
      case 't': cfg.secs = parse_secs(optarg); break;
      case 'n': cfg.count = parse_size(optarg); break;
      case 'j': cfg.threads = (unsigned)parse_size(optarg); break;
      case 'S': cfg.seed = parse_size(optarg); break;
      case 'B': cfg.direct = 0; break;
      default: usage();
    }
  }
  if (argc - optind != 2) usage();
  cfg.mode = argv[optind];
  cfg.target = argv[optind + 1];
  int seqread = !strcmp(cfg.mode, "seqread"), seqwrite = !strcmp(cfg.mode, "seqwrite");
  int randread = !strcmp(cfg.mode, "randread");
  if (!seqread && !seqwrite && !randread) usage();
  if (cfg.bs == 0) cfg.bs = randread ? 4096 : 1 << 20;
  if (cfg.bs % 512 || cfg.bs > (64u << 20)) {
    fprintf(stderr, "rz-io: the block size must be a multiple of 512 up to 64 MiB\n");
    return 2;
  }
  if (cfg.threads < 1 || cfg.threads > 256) usage();
  if (cfg.secs < 0) cfg.secs = randread ? 10 : 0;
  if (randread && cfg.secs == 0 && cfg.count == 0) {
    fprintf(stderr, "rz-io: randread needs a time limit (-t) or a count (-n)\n");
    return 2;
  }

  int flags = (seqwrite ? O_WRONLY : O_RDONLY) | (cfg.direct ? O_DIRECT : 0);
  int fd = open(cfg.target, flags);
  if (fd < 0) {
    fprintf(stderr, "rz-io: open %s%s: %s\n", cfg.target, cfg.direct ? " with O_DIRECT" : "", strerror(errno));
    return 1;
  }
  uint64_t size = target_size(fd, cfg.target);
  uint64_t bytes = cfg.bytes ? cfg.bytes : size;
  if (bytes > size) {
    fprintf(stderr, "rz-io: %s holds only %llu bytes\n", cfg.target, (unsigned long long)size);
    return 1;
  }
  bytes -= bytes % cfg.bs;

  uint64_t ops = 0;
  double secs = 0;
  int rc = randread ? run_rand(&cfg, fd, size, &ops, &secs) : run_seq(&cfg, fd, bytes, seqwrite, &ops, &secs);
  close(fd);
  if (rc < 0) return 1;
  if (secs <= 0) secs = 1e-9;
  double total = (double)ops * (double)cfg.bs;
  printf("RZIO mode=%s target=%s bs=%zu direct=%d threads=%u bytes=%.0f ops=%llu secs=%.3f mibps=%.2f iops=%.1f "
         "lat_us=%.1f\n",
         cfg.mode, cfg.target, cfg.bs, cfg.direct, randread ? cfg.threads : 1, total, (unsigned long long)ops, secs,
         total / secs / 1048576.0, (double)ops / secs, ops ? secs * 1e6 * (randread ? cfg.threads : 1) / (double)ops : 0);
  return 0;
}
