#include "vmm/console_output.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "util/error.h"

namespace rz::vmm {

ConsoleOutput::ConsoleOutput(int out_fd, size_t capacity)
    : out_fd_(out_fd), capacity_(capacity), event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!event_.valid()) throw Error(errno_message("eventfd", errno));
  buf_.reserve(4096);
}

void ConsoleOutput::append(std::span<const uint8_t> bytes) {
  std::unique_lock<std::mutex> lk(mu_);
  space_.wait(lk, [&] { return closed_ || buf_.size() + bytes.size() <= capacity_ || buf_.empty(); });
  const bool was_empty = buf_.empty();
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  if (was_empty) {
    uint64_t one = 1;
    ssize_t r = ::write(event_.get(), &one, sizeof one);
    (void)r;
  }
}

void ConsoleOutput::flush() {
  uint64_t v;
  ssize_t r = ::read(event_.get(), &v, sizeof v);
  (void)r;
  std::vector<uint8_t> out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    out.swap(buf_);
  }
  space_.notify_all();
  const uint8_t* p = out.data();
  size_t n = out.size();
  while (n > 0 && out_fd_ >= 0) {
    const ssize_t w = ::write(out_fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      pollfd pfd{out_fd_, POLLOUT, 0};
      ::poll(&pfd, 1, 100);
      continue;
    }
    if (w <= 0) break;  // output closed: drop the rest, the guest runs on
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void ConsoleOutput::close() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
  }
  space_.notify_all();
}

}  // namespace rz::vmm
