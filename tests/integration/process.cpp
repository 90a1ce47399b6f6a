#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

namespace rz::test {

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& opt) {
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (opt.drop_privileges && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(126);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  ProcessResult res;
  signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  int in_fd = in[1];
  bool in_closed = false;
  auto finish_stdin = [&] {
    if (opt.close_stdin && !in_closed) {
      close(in[1]);
      in_closed = true;
    }
    in_fd = -1;
  };
  if (opt.stdin_data.empty()) finish_stdin();
  const auto start = std::chrono::steady_clock::now();
  bool signalled = false, out_open = true, err_open = true;
  while (out_open || err_open) {
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > opt.timeout_ms) {
      res.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    if (!signalled && opt.signal_after_ms >= 0 && elapsed >= opt.signal_after_ms &&
        (opt.signal_when_out_contains.empty() || res.out.find(opt.signal_when_out_contains) != std::string::npos)) {
      kill(pid, opt.signal);
      signalled = true;
    }
    pollfd fds[3];
    nfds_t n = 0;
    if (out_open) fds[n++] = {out[0], POLLIN, 0};
    if (err_open) fds[n++] = {err[0], POLLIN, 0};
    if (in_fd >= 0) fds[n++] = {in_fd, POLLOUT, 0};
    poll(fds, n, 20);
    for (nfds_t i = 0; i < n; ++i) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == in_fd) {
        const ssize_t w = write(in_fd, opt.stdin_data.data() + written, opt.stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 || written == opt.stdin_data.size()) finish_stdin();
        continue;
      }
      char buf[4096];
      const ssize_t r = read(fds[i].fd, buf, sizeof buf);
      std::string& dst = fds[i].fd == out[0] ? res.out : res.err;
      if (r > 0) {
        dst.append(buf, static_cast<size_t>(r));
      } else {
        (fds[i].fd == out[0] ? out_open : err_open) = false;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!in_closed) close(in[1]);
  close(out[0]);
  close(err[0]);
  res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

}  // namespace rz::test
