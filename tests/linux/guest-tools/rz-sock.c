// rz-sock: a small netcat for the device tests (tests/linux/devices_in_host.sh),
// built as a static binary so that it runs both in the guest kit's busybox
// initramfs (which has no AF_VSOCK tool) and in the nested host.
//
// usage: rz-sock [-t SECONDS] [-r SECONDS] [-l] MODE ARGS...
//   pattern SEED BYTES        write BYTES deterministic pseudo-random bytes
//                             (xorshift64* from SEED) to stdout
//   tcp-listen PORT           accept one TCP connection (IPv4, any address)
//   tcp-connect ADDR PORT     connect to an IPv4 address
//   vsock-listen PORT         accept one AF_VSOCK stream connection (any CID)
//   vsock-connect CID PORT    connect to an AF_VSOCK CID:port
//   vsock-cid                 print this machine's local vsock CID
//   uds-listen PATH           accept one Unix stream connection on PATH (the
//                             host end of guest-initiated vsock connections)
//   uds-connect PATH PORT     connect to a Firecracker-style vsock Unix socket:
//                             send "CONNECT PORT\n", expect "OK <n>\n"
// After connecting, every socket mode relays in both directions at once:
// stdin to the socket (then shutdown(SHUT_WR) at end of input) and the socket
// to stdout, until both directions are finished. A summary goes to stderr:
//   rz-sock: MODE sent N received M [host_port P]
// Options: -t SECONDS overall time limit (default 300; exit 124 when hit);
// -r SECONDS keep retrying a refused or reset connect (or handshake) for up to
// SECONDS; -l close last: send the end of our stream (shutdown SHUT_WR) only
// after the peer's has arrived. A writer that got everything written can still
// lose the tail if its machine powers off right away (the data may sit in its
// socket buffer); when the other side uses -l, the end of stream it receives
// proves that all it sent arrived. Exit status: 0 on success, 1 on errors,
// 2 on usage errors.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char* g_mode = "";

static void die(const char* what) {
  fprintf(stderr, "rz-sock: %s: %s: %s\n", g_mode, what, strerror(errno));
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: rz-sock [-t SECONDS] [-r SECONDS] [-l] MODE ARGS...\n"
          "  pattern SEED BYTES | tcp-listen PORT | tcp-connect ADDR PORT |\n"
          "  vsock-listen PORT | vsock-connect CID PORT | vsock-cid |\n"
          "  uds-listen PATH | uds-connect PATH PORT\n");
  exit(2);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "rz-sock: time limit reached\n";
  ssize_t n = write(2, msg, sizeof msg - 1);
  (void)n;
  _exit(124);
}

static unsigned long parse_num(const char* s, unsigned long max) {
  char* end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 0);
  if (errno || end == s || *end || v > max) {
    fprintf(stderr, "rz-sock: bad number '%s'\n", s);
    exit(2);
  }
  return v;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(int fd, const void* buf, size_t len) {
  const char* p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int do_pattern(unsigned long seed, unsigned long long bytes) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  static unsigned char buf[65536];
  while (bytes > 0) {
    size_t n = bytes < sizeof buf ? (size_t)bytes : sizeof buf;
    for (size_t i = 0; i < n; i += 8) {
      x ^= x >> 12;
      x ^= x << 25;
      x ^= x >> 27;
      uint64_t v = x * 0x2545F4914F6CDD1Dull;
      for (size_t k = 0; k < 8 && i + k < n; k++) buf[i + k] = (unsigned char)(v >> (8 * k));
    }
    if (write_all(1, buf, n) < 0) die("write stdout");
    bytes -= n;
  }
  return 0;
}

// Relays stdin -> fd and fd -> stdout until both are done. The socket is
// non-blocking so that a peer that sends while we send cannot deadlock us.
static void relay(int fd, int close_last, unsigned long long* sent, unsigned long long* received) {
  static char out[65536], in[65536];
  size_t out_len = 0, out_off = 0;
  int stdin_open = 1, sock_readable = 1, wr_shut = 0;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  *sent = *received = 0;
  while (!wr_shut || sock_readable) {
    if (!stdin_open && out_off == out_len && !wr_shut && !(close_last && sock_readable)) {
      if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN) die("shutdown");
      wr_shut = 1;
      continue;
    }
    struct pollfd p[2];
    int n = 0, i_in = -1, i_sock = -1;
    if (stdin_open && out_off == out_len) {
      p[n] = (struct pollfd){.fd = 0, .events = POLLIN};
      i_in = n++;
    }
    short ev = 0;
    if (sock_readable) ev |= POLLIN;
    if (out_off < out_len) ev |= POLLOUT;
    if (ev) {
      p[n] = (struct pollfd){.fd = fd, .events = ev};
      i_sock = n++;
    }
    if (n == 0) break;
    if (poll(p, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (i_in >= 0 && p[i_in].revents) {
      ssize_t r = read(0, out, sizeof out);
      if (r < 0 && errno != EINTR && errno != EAGAIN) die("read stdin");
      if (r == 0) stdin_open = 0;
      if (r > 0) {
        out_len = (size_t)r;
        out_off = 0;
      }
    }
    if (i_sock >= 0 && p[i_sock].revents) {
      short re = p[i_sock].revents;
      if ((re & (POLLIN | POLLHUP | POLLERR)) && sock_readable) {
        ssize_t r = read(fd, in, sizeof in);
        if (r < 0 && errno != EINTR && errno != EAGAIN) die("read socket");
        if (r == 0) sock_readable = 0;
        if (r > 0) {
          if (write_all(1, in, (size_t)r) < 0) die("write stdout");
          *received += (unsigned long long)r;
        }
      }
      if ((re & (POLLOUT | POLLERR | POLLHUP)) && out_off < out_len) {
        ssize_t w = write(fd, out + out_off, out_len - out_off);
        if (w < 0 && errno != EINTR && errno != EAGAIN) die("write socket");
        if (w > 0) {
          out_off += (size_t)w;
          *sent += (unsigned long long)w;
        }
      }
    }
  }
}

// Accepts one connection on a listening socket.
static int accept_one(int lfd) {
  for (;;) {
    int c = accept(lfd, NULL, NULL);
    if (c >= 0) {
      close(lfd);
      return c;
    }
    if (errno != EINTR) die("accept");
  }
}

static int retryable(int err) {
  return err == ECONNREFUSED || err == ECONNRESET || err == ENOENT || err == ETIMEDOUT ||
         err == EHOSTUNREACH || err == ENETUNREACH || err == EAGAIN || err == EPIPE;
}

// Firecracker's handshake on a connected Unix socket: returns the host port
// from "OK <n>\n", or -1 with errno set (ECONNRESET when the line is not OK).
static long uds_handshake(int fd, unsigned long port) {
  char line[64];
  int len = snprintf(line, sizeof line, "CONNECT %lu\n", port);
  if (write_all(fd, line, (size_t)len) < 0) return -1;
  size_t n = 0;
  for (;;) {  // one byte at a time: the stream's data follows the newline
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      errno = ECONNRESET;
      return -1;
    }
    if (c == '\n') break;
    if (n + 1 >= sizeof line) {
      errno = EPROTO;
      return -1;
    }
    line[n++] = c;
  }
  line[n] = 0;
  char* end = NULL;
  if (strncmp(line, "OK ", 3) != 0) {
    fprintf(stderr, "rz-sock: %s: unexpected reply '%s'\n", g_mode, line);
    errno = EPROTO;
    return -1;
  }
  long hp = strtol(line + 3, &end, 10);
  if (end == line + 3 || *end) {
    fprintf(stderr, "rz-sock: %s: unexpected reply '%s'\n", g_mode, line);
    errno = EPROTO;
    return -1;
  }
  return hp;
}

int main(int argc, char** argv) {
  unsigned long limit = 300, retry = 0;
  int opt, close_last = 0;
  while ((opt = getopt(argc, argv, "+t:r:l")) != -1) {
    if (opt == 't') limit = parse_num(optarg, 86400);
    else if (opt == 'r') retry = parse_num(optarg, 86400);
    else if (opt == 'l') close_last = 1;
    else usage();
  }
  if (optind >= argc) usage();
  g_mode = argv[optind];
  char** a = argv + optind + 1;
  int na = argc - optind - 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  if (limit) alarm((unsigned)limit);

  if (!strcmp(g_mode, "pattern")) {
    if (na != 2) usage();
    return do_pattern(parse_num(a[0], ~0ul), parse_num(a[1], 1ul << 40));
  }
  if (!strcmp(g_mode, "vsock-cid")) {
    if (na != 0) usage();
    int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open /dev/vsock");
    unsigned int cid = 0;
    if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) die("IOCTL_VM_SOCKETS_GET_LOCAL_CID");
    printf("%u\n", cid);
    return 0;
  }

  int fd = -1;
  long host_port = -1;
  double deadline = now() + (double)retry;
  if (!strcmp(g_mode, "tcp-listen") || !strcmp(g_mode, "vsock-listen") || !strcmp(g_mode, "uds-listen")) {
    if (na != 1) usage();
    int lfd;
    if (!strcmp(g_mode, "tcp-listen")) {
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)parse_num(a[0], 65535)),
                               .sin_addr = {htonl(INADDR_ANY)}};
      lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (lfd < 0) die("socket");
      int one = 1;
      setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind(lfd, (struct sockaddr*)&sa, sizeof sa) < 0) die("bind");
    } else if (!strcmp(g_mode, "vsock-listen")) {
      struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_port = (unsigned)parse_num(a[0], 0xffffffffu),
                               .svm_cid = VMADDR_CID_ANY};
      lfd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (lfd < 0) die("socket(AF_VSOCK)");
      if (bind(lfd, (struct sockaddr*)&sa, sizeof sa) < 0) die("bind");
    } else {
      struct sockaddr_un sa = {.sun_family = AF_UNIX};
      if (strlen(a[0]) >= sizeof sa.sun_path) usage();
      strcpy(sa.sun_path, a[0]);
      unlink(a[0]);
      lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (lfd < 0) die("socket(AF_UNIX)");
      if (bind(lfd, (struct sockaddr*)&sa, sizeof sa) < 0) die("bind");
    }
    if (listen(lfd, 4) < 0) die("listen");
    fd = accept_one(lfd);
  } else if (!strcmp(g_mode, "tcp-connect") || !strcmp(g_mode, "vsock-connect") ||
             !strcmp(g_mode, "uds-connect")) {
    if (na != 2) usage();
    for (;;) {
      int err = 0;
      if (!strcmp(g_mode, "tcp-connect")) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)parse_num(a[1], 65535))};
        if (inet_pton(AF_INET, a[0], &sa.sin_addr) != 1) usage();
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr*)&sa, sizeof sa) < 0) err = errno;
      } else if (!strcmp(g_mode, "vsock-connect")) {
        struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_port = (unsigned)parse_num(a[1], 0xffffffffu),
                                 .svm_cid = (unsigned)parse_num(a[0], 0xffffffffu)};
        fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket(AF_VSOCK)");
        if (connect(fd, (struct sockaddr*)&sa, sizeof sa) < 0) err = errno;
      } else {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(a[0]) >= sizeof sa.sun_path) usage();
        strcpy(sa.sun_path, a[0]);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket(AF_UNIX)");
        if (connect(fd, (struct sockaddr*)&sa, sizeof sa) < 0) err = errno;
        if (!err) {
          host_port = uds_handshake(fd, parse_num(a[1], 0xffffffffu));
          if (host_port < 0) err = errno;
        }
      }
      if (!err) break;
      close(fd);
      fd = -1;
      if (!retryable(err) || now() >= deadline) {
        errno = err;
        die("connect");
      }
      usleep(200 * 1000);
    }
  } else {
    usage();
  }

  unsigned long long sent, received;
  double t0 = now();
  relay(fd, close_last, &sent, &received);
  double dt = now() - t0;
  close(fd);
  fprintf(stderr, "rz-sock: %s sent %llu received %llu", g_mode, sent, received);
  if (host_port >= 0) fprintf(stderr, " host_port %ld", host_port);
  fprintf(stderr, " seconds %.2f\n", dt);
  return 0;
}
