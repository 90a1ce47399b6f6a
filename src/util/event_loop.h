// An epoll event loop on its own thread: device back-ends (virtio queue
// kicks, TAP and socket fds, timers) register fds with a callback, and all
// callbacks run on the loop's thread, never on a vCPU thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "util/fd.h"

namespace rz {

class EventLoop {
 public:
  // Receives the epoll events (EPOLLIN, EPOLLOUT, EPOLLHUP, ...) that fired.
  using Callback = std::function<void(uint32_t events)>;

  EventLoop();
  ~EventLoop();  // stops and joins the thread
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Watches fd (level-triggered) for `events`; replaces an existing entry.
  // Safe from any thread, including from inside a callback.
  void add(int fd, uint32_t events, Callback cb);
  void modify(int fd, uint32_t events);
  // After remove() returns, the callback for fd is not called again (if
  // called from another thread while it runs, remove waits for it to end;
  // from inside the loop, it simply takes effect).
  void remove(int fd);
  // Runs fn on the loop thread soon (e.g. to kick a queue after restore).
  void post(std::function<void()> fn);

  void start();  // starts the thread (idempotent)
  void stop();   // stops and joins (idempotent)
  bool on_loop_thread() const;

 private:
  void run();
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: stop requests and posted work
  std::mutex mu_;
  std::mutex dispatch_mu_;  // held while callbacks run
  std::map<int, std::shared_ptr<Callback>> handlers_;
  std::vector<std::function<void()>> posted_;
  std::thread thread_;
  bool stopping_ = false;
};

}  // namespace rz
