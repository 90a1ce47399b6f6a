#include "util/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "util/error.h"
#include "util/log.h"

namespace rz {

EventLoop::EventLoop() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_.valid() || !wake_.valid()) throw Error(errno_message("event loop", errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) < 0)
    throw Error(errno_message("epoll_ctl", errno));
}

EventLoop::~EventLoop() { stop(); }

void EventLoop::add(int fd, uint32_t events, Callback cb) {
  std::lock_guard<std::mutex> lk(mu_);
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  const bool exists = handlers_.count(fd) != 0;
  if (::epoll_ctl(epoll_.get(), exists ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
    throw Error(errno_message("epoll_ctl(add fd " + std::to_string(fd) + ")", errno));
  handlers_[fd] = std::make_shared<Callback>(std::move(cb));
}

void EventLoop::modify(int fd, uint32_t events) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!handlers_.count(fd)) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
}

void EventLoop::remove(int fd) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (handlers_.erase(fd) == 0) return;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
  // Wait for a callback that may be running on the loop thread right now.
  if (!on_loop_thread()) std::lock_guard<std::mutex> wait(dispatch_mu_);
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof one);
  (void)r;
}

void EventLoop::start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void EventLoop::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!thread_.joinable()) return;
    stopping_ = true;
  }
  uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof one);
  (void)r;
  if (!on_loop_thread()) thread_.join();
}

bool EventLoop::on_loop_thread() const { return thread_.get_id() == std::this_thread::get_id(); }

void EventLoop::run() {
  epoll_event events[64];
  while (true) {
    const int n = ::epoll_wait(epoll_.get(), events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log::error(errno_message("epoll_wait", errno));
      return;
    }
    std::lock_guard<std::mutex> dispatch(dispatch_mu_);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) {
        uint64_t v;
        ssize_t r = ::read(wake_.get(), &v, sizeof v);
        (void)r;
        std::vector<std::function<void()>> work;
        {
          std::lock_guard<std::mutex> lk(mu_);
          if (stopping_) return;
          work.swap(posted_);
        }
        for (auto& w : work) w();
        continue;
      }
      std::shared_ptr<Callback> cb;
      {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = handlers_.find(fd);
        if (it == handlers_.end()) continue;  // removed by an earlier callback
        cb = it->second;
      }
      try {
        (*cb)(events[i].events);
      } catch (const std::exception& e) {
        log::error(std::string("event handler: ") + e.what());
      }
    }
  }
}

}  // namespace rz
