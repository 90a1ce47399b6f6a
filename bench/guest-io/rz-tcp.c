// rz-tcp: TCP throughput for bench/nested-io, one static binary for the guest
// kit's busybox initramfs and for the (nested) host.
//
// usage: rz-tcp [options] listen PORT send|recv|echo
//        rz-tcp [options] connect ADDR PORT send|recv|rr
// One connection (IPv4). The sending side writes -l bytes buffers for -t
// seconds (or -s bytes in all), then shuts its side down and waits until the
// receiver closes, so that its time covers delivery of the last byte. The
// receiving side reads until end of stream, then closes; its time runs from the
// first byte received to the end of the stream.
// Request/response (latency): "rr" sends one byte and waits for it to come
// back, again and again for -t seconds, then closes; "echo" sends back what it
// receives until end of stream.
// Options:
//   -t SECONDS  sender: send this long (default 5)
//   -s BYTES    sender: send this many bytes instead (K/M/G suffixes)
//   -l BYTES    buffer per write/read call (default 128K)
//   -T SECONDS  overall time limit (default 600; exit 124 when hit)
//   -r SECONDS  connect: retry a refused or unreachable connect this long (default 60)
//   -w BYTES    SO_SNDBUF/SO_RCVBUF (default: the kernel's autotuning)
// Prints one line on stdout:
//   RZTCP role=send|recv bytes=N secs=S mibps=X tcp_rtt_us=N cwnd=N retrans=N rcv_space=N
// (the last four from TCP_INFO when the transfer ended: smoothed RTT, congestion
// window in segments, retransmitted segments, receive-space estimate in bytes)
//   RZTCP role=rr trans=N secs=S tps=X lat_us=Y     (role=echo: bytes=N secs=S)
// Exit status 0, 1 on errors, 2 on usage errors, 124 on the time limit.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static void die(const char* what) {
  fprintf(stderr, "rz-tcp: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: rz-tcp [-t SECONDS | -s BYTES] [-l BYTES] [-T SECONDS] [-r SECONDS] [-w BYTES]\n"
          "              listen PORT send|recv | connect ADDR PORT send|recv\n");
  exit(2);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "rz-tcp: time limit reached\n";
  ssize_t n = write(2, msg, sizeof msg - 1);
  (void)n;
  _exit(124);
}

static unsigned short parse_port(const char* s) {
  uint64_t v = parse_size(s);
  if (v == 0 || v > 65535) usage();
  return (unsigned short)v;
}

static void set_bufs(int fd, int bufsize) {
  if (bufsize <= 0) return;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
}

static int do_listen(unsigned short port, int bufsize) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  set_bufs(ls, bufsize);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(ls, (struct sockaddr*)&a, sizeof a) < 0) die("bind");
  if (listen(ls, 1) < 0) die("listen");
  int fd;
  do {
    fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) die("accept");
  close(ls);
  return fd;
}

static int do_connect(const char* addr, unsigned short port, double retry, int bufsize) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
    fprintf(stderr, "rz-tcp: not an IPv4 address: %s\n", addr);
    exit(2);
  }
  double deadline = now() + retry;
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    set_bufs(fd, bufsize);
    if (connect(fd, (struct sockaddr*)&a, sizeof a) == 0) return fd;
    int e = errno;
    close(fd);
    if ((e == ECONNREFUSED || e == ENETUNREACH || e == EHOSTUNREACH || e == ETIMEDOUT || e == EINTR) &&
        now() < deadline) {
      usleep(200000);
      continue;
    }
    errno = e;
    die("connect");
  }
}

static struct tcp_info g_info;
static int g_have_info;

static void grab_info(int fd) {
  socklen_t len = sizeof g_info;
  g_have_info = getsockopt(fd, IPPROTO_TCP, TCP_INFO, &g_info, &len) == 0;
}

static void report(const char* role, uint64_t bytes, double secs) {
  if (secs <= 0) secs = 1e-9;
  printf("RZTCP role=%s bytes=%llu secs=%.3f mibps=%.3f", role, (unsigned long long)bytes, secs,
         (double)bytes / secs / 1048576.0);
  if (g_have_info) {
    printf(" tcp_rtt_us=%u cwnd=%u retrans=%u rcv_space=%u", g_info.tcpi_rtt, g_info.tcpi_snd_cwnd,
           g_info.tcpi_total_retrans, g_info.tcpi_rcv_space);
  }
  printf("\n");
  fflush(stdout);
}

static void do_send(int fd, size_t len, double secs, uint64_t limit) {
  char* buf = malloc(len);
  if (!buf) die("malloc");
  uint32_t x = 12345;
  for (size_t i = 0; i < len; i++) {
    x = x * 1664525u + 1013904223u;
    buf[i] = (char)(x >> 24);
  }
  double t0 = now(), deadline = t0 + secs;
  uint64_t sent = 0;
  for (;;) {
    if (limit ? sent >= limit : now() >= deadline) break;
    size_t want = len;
    if (limit && limit - sent < want) want = (size_t)(limit - sent);
    ssize_t n = send(fd, buf, want, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("send");
    }
    sent += (uint64_t)n;
  }
  grab_info(fd);
  if (shutdown(fd, SHUT_WR) < 0) die("shutdown");
  // The receiver closes after it has read everything.
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != ECONNRESET) die("read (waiting for the receiver to close)");
    break;
  }
  report("send", sent, now() - t0);
  free(buf);
}

// read() that retries on EINTR and dies on any other error: > 0 bytes read,
// 0 at the end of the stream.
static ssize_t read_some(int fd, void* buf, size_t len) {
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0) return n;
    if (errno != EINTR) die("read");
  }
}

static void do_recv(int fd, size_t len) {
  char* buf = malloc(len);
  if (!buf) die("malloc");
  uint64_t got = 0;
  double t0 = 0;
  for (;;) {
    ssize_t n = read_some(fd, buf, len);
    if (n == 0) break;
    if (got == 0) t0 = now();
    got += (uint64_t)n;
    if ((got >> 20) != ((got - (uint64_t)n) >> 20)) grab_info(fd);  // about once per MiB
  }
  double t1 = now();
  report("recv", got, got ? t1 - t0 : 0);
  free(buf);
}

static void do_rr(int fd, double secs) {
  char c = 'x';
  uint64_t trans = 0;
  double t0 = now(), t = t0;
  while (t - t0 < secs) {
    ssize_t n = send(fd, &c, 1, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) die("send");
    n = read_some(fd, &c, 1);
    if (n == 0) {
      fprintf(stderr, "rz-tcp: the echo side closed the connection\n");
      exit(1);
    }
    trans++;
    t = now();
  }
  double d = t - t0;
  printf("RZTCP role=rr trans=%llu secs=%.3f tps=%.1f lat_us=%.1f\n", (unsigned long long)trans, d,
         d > 0 ? (double)trans / d : 0, trans ? d * 1e6 / (double)trans : 0);
  fflush(stdout);
}

static void do_echo(int fd, size_t len) {
  char* buf = malloc(len);
  if (!buf) die("malloc");
  uint64_t got = 0;
  double t0 = now();
  for (;;) {
    ssize_t n = read_some(fd, buf, len);
    if (n == 0) break;
    got += (uint64_t)n;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        die("send");
      }
      off += w;
    }
  }
  report("echo", got, now() - t0);
  free(buf);
}

int main(int argc, char** argv) {
  double secs = 5, limit_s = 600, retry = 60;
  uint64_t bytes = 0;
  size_t len = 128 << 10;
  int bufsize = 0, opt;
  while ((opt = getopt(argc, argv, "t:s:l:T:r:w:")) != -1) {
    switch (opt) {
      case 't': secs = parse_secs(optarg); break;
      case 's': bytes = parse_size(optarg); break;
      case 'l': len = (size_t)parse_size(optarg); break;
      case 'T': limit_s = parse_secs(optarg); break;
      case 'r': retry = parse_secs(optarg); break;
      case 'w': bufsize = (int)parse_size(optarg); break;
      default: usage();
    }
  }
  if (len == 0 || len > (64u << 20)) usage();
  int rest = argc - optind;
  char** a = argv + optind;
  signal(SIGALRM, on_alarm);
  signal(SIGPIPE, SIG_IGN);
  if (limit_s > 0) alarm((unsigned)(limit_s + 0.999));
  int fd;
  const char* dir;
  if (rest == 3 && !strcmp(a[0], "listen")) {
    dir = a[2];
    fd = do_listen(parse_port(a[1]), bufsize);
  } else if (rest == 4 && !strcmp(a[0], "connect")) {
    dir = a[3];
    fd = do_connect(a[1], parse_port(a[2]), retry, bufsize);
  } else {
    usage();
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!strcmp(dir, "send")) do_send(fd, len, secs, bytes);
  else if (!strcmp(dir, "recv")) do_recv(fd, len);
  else if (!strcmp(dir, "rr")) do_rr(fd, secs);
  else if (!strcmp(dir, "echo")) do_echo(fd, len);
  else usage();
  close(fd);
  return 0;
}
