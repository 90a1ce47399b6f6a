/* rz_bench_measure: run one command and report what it cost as a whole
 * process. Used by bench/startup; more precise than /usr/bin/time (which
 * rounds to 10 ms).
 *
 *   rz_bench_measure [-t SECONDS] CMD [ARGS...]
 *
 * CMD inherits stdin, stdout and stderr. When it has ended, one line goes to
 * file descriptor 3 (or to stderr when fd 3 is not open):
 *
 *   wall_us=<n> user_us=<n> sys_us=<n> maxrss_kib=<n> status=<n>
 *
 * wall_us runs from just before the spawn to the reaping of CMD (so it
 * includes exec and the dynamic loader); user/sys/maxrss are the kernel's
 * rusage for CMD (with any children it waited for); status is CMD's exit
 * status, or 128+N when signal N ended it. With -t, CMD is killed (SIGKILL,
 * so status=137) when it runs longer than SECONDS. Exits with 0 when CMD ran,
 * 127 when it could not be started. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

static void on_alarm(int sig) { (void)sig; }

static long long tv_us(struct timeval tv) {
  return (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
}

int main(int argc, char** argv) {
  int first = 1;
  unsigned timeout_s = 0;
  if (argc > 2 && strcmp(argv[1], "-t") == 0) {
    char* end;
    unsigned long v = strtoul(argv[2], &end, 10);
    if (*end != '\0' || v == 0 || v > 86400) {
      fprintf(stderr, "rz_bench_measure: bad -t %s\n", argv[2]);
      return 127;
    }
    timeout_s = (unsigned)v;
    first = 3;
  }
  if (argc <= first) {
    fprintf(stderr, "usage: rz_bench_measure [-t SECONDS] CMD [ARGS...]\n");
    return 127;
  }
  int report = fcntl(3, F_GETFD) >= 0 ? 3 : STDERR_FILENO;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (report == 3) posix_spawn_file_actions_addclose(&actions, 3);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid;
  int err = posix_spawnp(&pid, argv[first], &actions, NULL, argv + first, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    fprintf(stderr, "rz_bench_measure: cannot run %s: %s\n", argv[first], strerror(err));
    return 127;
  }
  if (timeout_s > 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;  /* no SA_RESTART: wait4 returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    alarm(timeout_s);
  }
  int wstatus;
  struct rusage ru;
  while (wait4(pid, &wstatus, 0, &ru) < 0) {
    if (errno != EINTR) {
      perror("rz_bench_measure: wait4");
      return 127;
    }
    kill(pid, SIGKILL);  /* the only handled signal is the -t alarm */
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);

  long long wall = (long long)(t1.tv_sec - t0.tv_sec) * 1000000LL +
                   (t1.tv_nsec - t0.tv_nsec) / 1000;
  int status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  dprintf(report, "wall_us=%lld user_us=%lld sys_us=%lld maxrss_kib=%ld status=%d\n",
          wall, tv_us(ru.ru_utime), tv_us(ru.ru_stime), ru.ru_maxrss, status);
  return 0;
}
