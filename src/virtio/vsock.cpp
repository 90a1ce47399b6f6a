#include "virtio/vsock.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstring>

#include "util/error.h"
#include "util/log.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {

using vsock::Header;
using vsock::kHdrSize;

namespace {

// Bytes waiting to be written to a Unix socket, oldest first. Memory is
// released when it empties, so an idle connection holds (almost) nothing.
class ByteQueue {
 public:
  size_t size() const { return data_.size() - head_; }
  bool empty() const { return head_ == data_.size(); }
  std::span<const uint8_t> front() const { return {data_.data() + head_, size()}; }
  // Appends n bytes (zeroed) and returns them for the caller to fill. The
  // storage grows geometrically but not beyond `soft_cap` bytes unless the
  // content itself needs more.
  std::span<uint8_t> extend(size_t n, size_t soft_cap) {
    if (head_ > 0 && head_ >= data_.size() / 2) {
      data_.erase(data_.begin(), data_.begin() + static_cast<ptrdiff_t>(head_));
      head_ = 0;
    }
    const size_t old = data_.size();
    if (old + n > data_.capacity())
      data_.reserve(std::max(old + n, std::min(data_.capacity() * 2, soft_cap)));
    data_.resize(old + n);
    return {data_.data() + old, n};
  }
  void consume(size_t n) {
    head_ += std::min(n, size());
    if (head_ == data_.size()) clear();
  }
  void clear() {
    head_ = 0;
    data_.clear();
    if (data_.capacity() > kKeepCapacity) std::vector<uint8_t>().swap(data_);
  }

 private:
  static constexpr size_t kKeepCapacity = 16 * 1024;
  std::vector<uint8_t> data_;
  size_t head_ = 0;
};

bool make_unix_addr(const std::string& path, sockaddr_un* addr, socklen_t* len) {
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) return false;
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

// "CONNECT <port>\n", port decimal, 1..10 digits, at most 2^32 - 1.
std::optional<uint32_t> parse_connect_line(std::string_view line) {
  constexpr std::string_view kPrefix = "CONNECT ";
  if (!line.starts_with(kPrefix) || !line.ends_with('\n')) return std::nullopt;
  line.remove_prefix(kPrefix.size());
  line.remove_suffix(1);
  if (line.empty() || line.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char ch : line) {
    if (ch < '0' || ch > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(ch - '0');
  }
  if (v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(v);
}

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

}  // namespace

struct VirtioVsock::Connection {
  enum class State {
    kReadingConnect,  // host-initiated, waiting for the CONNECT line
    kConnecting,      // host-initiated, REQUEST sent, waiting for RESPONSE
    kEstablished,
  };

  uint64_t id = 0;
  UniqueFd fd;
  State state = State::kReadingConnect;
  std::string line;  // CONNECT line so far (kReadingConnect)
  uint32_t local_port = 0;  // host side
  uint32_t peer_port = 0;   // guest side

  // host -> guest: the guest's receive buffer, as it last told us.
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  uint32_t tx_cnt = 0;        // payload bytes sent to the guest
  bool host_eof = false;      // the Unix socket reached EOF (SHUTDOWN sent)
  bool in_rx_ready = false;   // listed in rx_ready_
  bool credit_request_sent = false;

  // guest -> host.
  ByteQueue to_host;
  size_t control_bytes = 0;   // leading bytes of to_host that are ours ("OK ...\n")
  uint32_t fwd_cnt = 0;       // guest payload bytes handed to the socket
  uint32_t last_fwd_cnt_sent = 0;
  bool credit_update_queued = false;
  uint32_t peer_shutdown = 0;  // SHUTDOWN flags received from the guest
  bool host_write_shut = false;

  // Event loop registration.
  bool registered = false;
  uint32_t events = 0;

  // When the connection is given up if nothing happens (see VsockConfig).
  bool has_deadline = false;
  std::chrono::steady_clock::time_point deadline{};

  size_t guest_bytes_buffered() const { return to_host.size() - control_bytes; }
};

// --- Configuration ----------------------------------------------------------------

VsockConfig parse_vsock_spec(std::string_view spec) {
  VsockConfig cfg;
  bool have_cid = false, have_path = false;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string_view::npos) comma = spec.size();
    const std::string_view item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) throw UsageError("--vsock: empty item in '" + std::string(spec) + "'");
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw UsageError("--vsock: expected key=value, got '" + std::string(item) + "'");
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    if (key == "cid") {
      if (have_cid) throw UsageError("--vsock: cid given twice");
      uint64_t cid = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), cid);
      if (ec != std::errc() || end != value.data() + value.size() || value.empty() ||
          cid < vsock::kMinGuestCid || cid > vsock::kMaxGuestCid)
        throw UsageError("--vsock: cid must be a number from 3 to 4294967294, got '" +
                         std::string(value) + "'");
      cfg.guest_cid = cid;
      have_cid = true;
    } else if (key == "socket" || key == "uds_path") {
      if (have_path) throw UsageError("--vsock: socket given twice");
      if (value.empty()) throw UsageError("--vsock: socket path is empty");
      cfg.uds_path = std::string(value);
      have_path = true;
    } else {
      throw UsageError("--vsock: unknown key '" + std::string(key) +
                       "' (expected cid=N,socket=PATH)");
    }
    if (comma == spec.size()) break;
  }
  if (!have_cid) throw UsageError("--vsock: cid=N is required");
  if (!have_path) throw UsageError("--vsock: socket=PATH is required");
  return cfg;
}

static void validate(const VsockConfig& c) {
  if (c.guest_cid < vsock::kMinGuestCid || c.guest_cid > vsock::kMaxGuestCid)
    throw UsageError("vsock: guest CID " + std::to_string(c.guest_cid) +
                     " out of range (3..4294967294)");
  sockaddr_un addr;
  socklen_t len;
  if (!make_unix_addr(c.uds_path, &addr, &len))
    throw UsageError("vsock: socket path '" + c.uds_path + "' is empty or longer than " +
                     std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  if (c.queue_size == 0 || c.queue_size > kMaxQueueSize || (c.queue_size & (c.queue_size - 1)))
    throw UsageError("vsock: queue size must be a power of 2 up to 32768");
  if (c.max_connections == 0 || c.max_connections > 65536)
    throw UsageError("vsock: max_connections must be 1..65536");
  if (c.buf_alloc < 4096 || c.buf_alloc > (64U << 20))
    throw UsageError("vsock: buf_alloc must be 4 KiB..64 MiB");
  if (c.connect_line_timeout_ms == 0 || c.connect_timeout_ms == 0 || c.shutdown_timeout_ms == 0)
    throw UsageError("vsock: timeouts must be positive");
}

// --- Construction ------------------------------------------------------------------

VirtioVsock::VirtioVsock(EventLoop& loop, const VsockConfig& config)
    : loop_(loop), config_(config) {
  validate(config_);
  kick_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!kick_fd_.valid()) throw Error(errno_message("vsock: eventfd", errno));
  timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_fd_.valid()) throw Error(errno_message("vsock: timerfd", errno));
  bind_listener();
}

VirtioVsock::~VirtioVsock() {
  // Normally reset() ran on the loop thread already (the transport does it
  // when the machine stops); this is the fallback.
  if (active_) reset();
  close_all_connections();
  listener_.reset();
  if (unlink_on_close_) {
    struct stat st;
    // Only our own socket file: someone may have replaced it meanwhile.
    if (::lstat(config_.uds_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
        static_cast<uint64_t>(st.st_ino) == socket_ino_ && static_cast<uint64_t>(st.st_dev) == socket_dev_)
      ::unlink(config_.uds_path.c_str());
  }
}

void VirtioVsock::bind_listener() {
  const std::string& path = config_.uds_path;
  sockaddr_un addr{};
  socklen_t len = 0;
  make_unix_addr(path, &addr, &len);  // validated

  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw UsageError("vsock: " + path + " exists and is not a socket (not removing it)");
    // A socket file: stale unless a live process still accepts on it.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (probe.valid()) {
      const int r = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len);
      if (r == 0 || would_block(errno))
        throw UsageError("vsock: " + path + " is in use by another process");
    }
    if (::unlink(path.c_str()) < 0 && errno != ENOENT)
      throw UsageError(errno_message("vsock: cannot remove stale socket " + path, errno));
  }

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw Error(errno_message("vsock: socket", errno));
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) < 0)
    throw UsageError(errno_message("vsock: cannot bind " + path, errno));
  if (::listen(fd.get(), 128) < 0) {
    const int err = errno;
    ::unlink(path.c_str());
    throw UsageError(errno_message("vsock: cannot listen on " + path, err));
  }
  if (::lstat(path.c_str(), &st) == 0) {
    socket_ino_ = static_cast<uint64_t>(st.st_ino);
    socket_dev_ = static_cast<uint64_t>(st.st_dev);
    unlink_on_close_ = true;
  }
  listener_ = std::move(fd);
}

// --- VirtioDevice ----------------------------------------------------------------------

uint16_t VirtioVsock::device_type() const { return kDeviceIdVsock; }

uint64_t VirtioVsock::device_features() const {
  // Stream sockets only: without VIRTIO_VSOCK_F_SEQPACKET the driver uses
  // streams (5.10.3); F_STREAM is implied when no type bit is offered.
  return feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFEventIdx) |
         feature_bit(kVirtioFIndirectDesc);
}

void VirtioVsock::read_config(uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    uint8_t b = 0;
    if (offset < vsock::kConfigSize && i < vsock::kConfigSize - offset)
      b = static_cast<uint8_t>(config_.guest_cid >> (8 * (offset + i)));
    data[i] = b;
  }
}

bool VirtioVsock::activate(const memory::GuestMemory& mem, uint64_t, std::vector<Queue*> queues,
                           std::shared_ptr<Interrupt> irq) {
  if (queues.size() != 3 || !queues[vsock::kRxQueue] || !queues[vsock::kTxQueue] || !irq)
    return false;
  if (active_) reset();
  mem_ = &mem;
  rxq_ = queues[vsock::kRxQueue];
  txq_ = queues[vsock::kTxQueue];
  evq_ = queues[vsock::kEventQueue];
  irq_ = std::move(irq);
  try {
    loop_.add(listener_.get(), EPOLLIN, [this](uint32_t ev) { on_listener(ev); });
    loop_.add(kick_fd_.get(), EPOLLIN, [this](uint32_t ev) { on_kick(ev); });
    loop_.add(timer_fd_.get(), EPOLLIN, [this](uint32_t ev) { on_timer(ev); });
  } catch (const Error& e) {
    log::error(std::string("virtio-vsock: ") + e.what());
    loop_.remove(listener_.get());
    loop_.remove(kick_fd_.get());
    loop_.remove(timer_fd_.get());
    mem_ = nullptr;
    rxq_ = txq_ = evq_ = nullptr;
    irq_.reset();
    return false;
  }
  active_ = true;
  return true;
}

void VirtioVsock::reset() {
  if (active_) {
    loop_.remove(listener_.get());
    loop_.remove(kick_fd_.get());
    loop_.remove(timer_fd_.get());
  }
  close_all_connections();
  set_timer(false);
  uint64_t v;
  ssize_t r = ::read(kick_fd_.get(), &v, sizeof v);  // drop a pending self-kick
  (void)r;
  active_ = false;
  mem_ = nullptr;
  rxq_ = txq_ = evq_ = nullptr;
  irq_.reset();
  tx_pending_ = false;
  event_pending_ = false;
  listener_paused_ = false;
}

void VirtioVsock::process_queue(uint16_t index) {
  if (!active_) return;
  resume_listener();
  switch (index) {
    case vsock::kRxQueue:
      fill_rx();
      break;
    case vsock::kTxQueue:
      process_tx();
      fill_rx();  // replies (RESPONSE, RST, CREDIT_UPDATE) for the guest
      break;
    case vsock::kEventQueue:
      deliver_events();
      break;
    default:
      break;
  }
}

void VirtioVsock::send_transport_reset() {
  if (!active_) return;
  close_all_connections();
  event_pending_ = true;
  deliver_events();
}

VsockStats VirtioVsock::stats() const {
  VsockStats s;
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  s.connections = num_connections_.load(std::memory_order_relaxed);
  s.host_connects = get(counters_.host_connects);
  s.guest_connects = get(counters_.guest_connects);
  s.guest_connect_fails = get(counters_.guest_connect_fails);
  s.refused = get(counters_.refused);
  s.bad_connect_lines = get(counters_.bad_connect_lines);
  s.rx_packets = get(counters_.rx_packets);
  s.rx_bytes = get(counters_.rx_bytes);
  s.tx_packets = get(counters_.tx_packets);
  s.tx_bytes = get(counters_.tx_bytes);
  s.tx_dropped = get(counters_.tx_dropped);
  s.rst_sent = get(counters_.rst_sent);
  s.rst_dropped = get(counters_.rst_dropped);
  s.credit_stalls = get(counters_.credit_stalls);
  s.credit_updates_sent = get(counters_.credit_updates_sent);
  s.bad_rx_chains = get(counters_.bad_rx_chains);
  s.socket_wakeups = get(counters_.socket_wakeups);
  s.host_write_blocked = get(counters_.host_write_blocked);
  s.timeouts = get(counters_.timeouts);
  return s;
}

// --- Connections ---------------------------------------------------------------------------

VirtioVsock::Connection* VirtioVsock::find(uint64_t id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

VirtioVsock::Connection* VirtioVsock::find(uint32_t local_port, uint32_t peer_port) {
  auto it = ports_.find({local_port, peer_port});
  return it == ports_.end() ? nullptr : find(it->second);
}

VirtioVsock::Connection& VirtioVsock::add_connection(UniqueFd fd) {
  auto c = std::make_unique<Connection>();
  c->id = next_id_++;
  c->fd = std::move(fd);
  Connection& ref = *c;
  conns_.emplace(ref.id, std::move(c));
  num_connections_.store(conns_.size(), std::memory_order_relaxed);
  return ref;
}

void VirtioVsock::close_connection(uint64_t id, bool rst) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Connection& c = *it->second;
  if (c.registered) loop_.remove(c.fd.get());
  if (c.in_rx_ready) {
    auto pos = std::find(rx_ready_.begin(), rx_ready_.end(), id);
    if (pos != rx_ready_.end()) rx_ready_.erase(pos);
  }
  if (c.state != Connection::State::kReadingConnect) {
    ports_.erase({c.local_port, c.peer_port});
    if (rst) queue_rst(c.local_port, c.peer_port);
  }
  conns_.erase(it);  // closes the Unix socket
  num_connections_.store(conns_.size(), std::memory_order_relaxed);
  resume_listener();
}

void VirtioVsock::resume_listener() {
  if (!listener_paused_ || !active_) return;
  listener_paused_ = false;
  try {
    loop_.add(listener_.get(), EPOLLIN, [this](uint32_t ev) { on_listener(ev); });
  } catch (const Error& e) {
    log::warn(std::string("virtio-vsock: ") + e.what());
    listener_paused_ = true;
  }
}

void VirtioVsock::close_all_connections() {
  for (auto& [id, c] : conns_)
    if (c->registered) loop_.remove(c->fd.get());
  conns_.clear();
  ports_.clear();
  rx_ready_.clear();
  control_.clear();
  num_connections_.store(0, std::memory_order_relaxed);
}

uint32_t VirtioVsock::peer_credit(const Connection& c) const {
  const uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;  // wraps like the spec's counters
  return in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
}

bool VirtioVsock::wants_read(const Connection& c) const {
  return c.state == Connection::State::kEstablished && !c.host_eof &&
         !(c.peer_shutdown & vsock::kShutdownRcv) && !c.in_rx_ready && peer_credit(c) > 0;
}

void VirtioVsock::update_interest(Connection& c) {
  uint32_t ev = 0;
  if (c.state == Connection::State::kReadingConnect) {
    ev = EPOLLIN;
  } else {
    if (wants_read(c)) ev |= EPOLLIN;
    if (!c.to_host.empty()) ev |= EPOLLOUT;
  }
  // With nothing to wait for the fd leaves the epoll set altogether: a hung
  // up socket would otherwise report EPOLLHUP over and over. Except while a
  // host-initiated connection waits for the guest's answer: registered with
  // no events, epoll still reports EPOLLHUP, i.e. the host process gave up.
  const bool keep = c.state == Connection::State::kConnecting;
  if (ev == 0 && !keep) {
    if (c.registered) loop_.remove(c.fd.get());
    c.registered = false;
    c.events = 0;
    return;
  }
  if (c.registered && ev == c.events) return;
  try {
    if (!c.registered) {
      const uint64_t id = c.id;
      loop_.add(c.fd.get(), ev, [this, id](uint32_t e) { on_conn_event(id, e); });
      c.registered = true;
    } else {
      loop_.modify(c.fd.get(), ev);
    }
    c.events = ev;
  } catch (const Error& e) {
    log::warn(std::string("virtio-vsock: ") + e.what());
  }
}

void VirtioVsock::mark_rx_ready(Connection& c) {
  if (!c.in_rx_ready) {
    c.in_rx_ready = true;
    rx_ready_.push_back(c.id);
  }
  update_interest(c);
}

void VirtioVsock::set_deadline(Connection& c, uint32_t ms) {
  c.has_deadline = true;
  c.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  set_timer(true);
}

void VirtioVsock::set_timer(bool on) {
  if (on == timer_armed_) return;
  // While any connection has a deadline: a tick every kTimerTickMs.
  itimerspec its{};
  if (on) {
    its.it_interval.tv_nsec = kTimerTickMs * 1000000L;
    its.it_value = its.it_interval;
  }
  if (::timerfd_settime(timer_fd_.get(), 0, &its, nullptr) == 0) timer_armed_ = on;
}

void VirtioVsock::on_timer(uint32_t) {
  uint64_t ticks;
  ssize_t r = ::read(timer_fd_.get(), &ticks, sizeof ticks);
  (void)r;
  if (!active_) return;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<uint64_t, bool>> expired;  // id, send RST
  bool pending = false;
  for (auto& [id, c] : conns_) {
    if (!c->has_deadline) continue;
    if (c->deadline <= now)
      expired.emplace_back(id, c->state != Connection::State::kReadingConnect);
    else
      pending = true;
  }
  for (const auto& [id, rst] : expired) {
    counters_.timeouts.fetch_add(1, std::memory_order_relaxed);
    log::debug("virtio-vsock: connection timed out");
    close_connection(id, rst);
  }
  if (!pending) set_timer(false);
  fill_rx();
}

void VirtioVsock::kick_self() {
  const uint64_t one = 1;
  ssize_t r = ::write(kick_fd_.get(), &one, sizeof one);
  (void)r;
}

void VirtioVsock::on_kick(uint32_t) {
  uint64_t v;
  ssize_t r = ::read(kick_fd_.get(), &v, sizeof v);
  (void)r;
  if (!active_) return;
  if (tx_pending_) process_tx();
  fill_rx();
}

// --- Host side ---------------------------------------------------------------------------

void VirtioVsock::on_listener(uint32_t) {
  if (!active_) return;
  for (unsigned i = 0; i < kAcceptBudget; ++i) {
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (!would_block(errno)) {
        log::warn(errno_message("virtio-vsock: accept on " + config_.uds_path, errno));
        // Out of fds or memory: the listener would stay readable and spin the
        // loop. Stop accepting until a connection closes or the guest acts.
        loop_.remove(listener_.get());
        listener_paused_ = true;
      }
      break;
    }
    UniqueFd ufd(fd);
    if (conns_.size() >= config_.max_connections) {
      counters_.refused.fetch_add(1, std::memory_order_relaxed);
      log::debug("virtio-vsock: connection limit reached, refusing a host connection");
      continue;  // ufd closes it
    }
    Connection& c = add_connection(std::move(ufd));
    c.state = Connection::State::kReadingConnect;
    set_deadline(c, config_.connect_line_timeout_ms);
    update_interest(c);
  }
}

void VirtioVsock::on_conn_event(uint64_t id, uint32_t events) {
  counters_.socket_wakeups.fetch_add(1, std::memory_order_relaxed);
  if (!active_) return;
  Connection* c = find(id);
  if (!c) return;
  if (c->state == Connection::State::kReadingConnect) {
    read_connect_line(id);
    fill_rx();
    return;
  }
  if (c->state == Connection::State::kConnecting) {
    // Only EPOLLHUP/EPOLLERR come here; check it is this socket's (events
    // are hints, see below) before dropping the half-made connection.
    pollfd p{c->fd.get(), 0, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) {
      close_connection(id, true);  // the guest may have accepted already
      fill_rx();
    }
    return;
  }
  // Events are hints (an fd number may have been reused within one epoll
  // batch): the socket calls below report the real state.
  if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && !c->to_host.empty()) {
    if (!flush_to_host(id)) {
      fill_rx();
      return;
    }
    c = find(id);
    if (!c) {
      fill_rx();
      return;
    }
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && wants_read(*c))
    mark_rx_ready(*c);
  else
    update_interest(*c);
  fill_rx();
}

void VirtioVsock::read_connect_line(uint64_t id) {
  Connection* c = find(id);
  if (!c) return;
  char buf[kMaxConnectLine];
  const size_t room = kMaxConnectLine - c->line.size();
  // Peek first: only the line itself is consumed, whatever the host process
  // sent after it stays in the socket for the guest.
  ssize_t n;
  do {
    n = ::recv(c->fd.get(), buf, room, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && would_block(errno)) return;
  if (n <= 0) {  // EOF or error before a whole line
    close_connection(id, false);
    return;
  }
  const void* nl = std::memchr(buf, '\n', static_cast<size_t>(n));
  const size_t take =
      nl ? static_cast<size_t>(static_cast<const char*>(nl) - buf) + 1 : static_cast<size_t>(n);
  ssize_t got;
  do {
    got = ::recv(c->fd.get(), buf, take, MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got != static_cast<ssize_t>(take)) {
    close_connection(id, false);
    return;
  }
  c->line.append(buf, take);
  if (!nl) {
    if (c->line.size() >= kMaxConnectLine) {
      counters_.bad_connect_lines.fetch_add(1, std::memory_order_relaxed);
      log::debug("virtio-vsock: CONNECT line too long");
      close_connection(id, false);
    }
    return;
  }
  const auto port = parse_connect_line(c->line);
  if (!port) {
    counters_.bad_connect_lines.fetch_add(1, std::memory_order_relaxed);
    log::debug("virtio-vsock: malformed CONNECT line");
    close_connection(id, false);
    return;
  }
  start_host_connect(id, *port);
}

void VirtioVsock::start_host_connect(uint64_t id, uint32_t guest_port) {
  Connection* c = find(id);
  if (!c) return;
  // An unused (host port, guest port) pair; at most one try per open
  // connection can fail.
  std::optional<uint32_t> port;
  for (size_t attempt = 0; attempt <= conns_.size(); ++attempt) {
    const uint32_t p = next_host_port_;
    next_host_port_ = (p >= vsock::kPortAny - 1) ? kFirstHostPort : p + 1;
    if (!ports_.count({p, guest_port})) {
      port = p;
      break;
    }
  }
  if (!port) {
    close_connection(id, false);
    return;
  }
  c->line = std::string();
  c->state = Connection::State::kConnecting;
  set_deadline(*c, config_.connect_timeout_ms);
  c->local_port = *port;
  c->peer_port = guest_port;
  ports_[{*port, guest_port}] = id;
  if (!queue_control(*c, vsock::kOpRequest)) {
    close_connection(id, false);
    return;
  }
  update_interest(*c);
}

bool VirtioVsock::flush_to_host(uint64_t id) {
  Connection* c = find(id);
  if (!c) return false;
  // Each pass writes something or stops: bounded by the buffered bytes.
  while (!c->to_host.empty()) {
    const auto f = c->to_host.front();
    const ssize_t n = ::send(c->fd.get(), f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (would_block(errno)) {
        counters_.host_write_blocked.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      log::debug(errno_message("virtio-vsock: write to host socket", errno));
      close_connection(id, true);
      return false;
    }
    const size_t done = static_cast<size_t>(n);
    const size_t ours = std::min(done, c->control_bytes);
    c->control_bytes -= ours;
    c->fwd_cnt += static_cast<uint32_t>(done - ours);
    c->to_host.consume(done);
  }
  if (c->to_host.empty() && (c->peer_shutdown & vsock::kShutdownSend) && !c->host_write_shut) {
    ::shutdown(c->fd.get(), SHUT_WR);
    c->host_write_shut = true;
  }
  credit_bookkeeping(*c);
  update_interest(*c);
  maybe_finish(id);
  return find(id) != nullptr;
}

void VirtioVsock::credit_bookkeeping(Connection& c) {
  if (c.state != Connection::State::kEstablished || c.credit_update_queued) return;
  // Tell the guest about freed space once a quarter of the buffer has been
  // consumed unannounced. Below that it still sees >= 3/4 of buf_alloc free
  // whenever our buffer is empty, so it never waits on us for nothing.
  const uint32_t unannounced = c.fwd_cnt - c.last_fwd_cnt_sent;
  if (unannounced >= std::max<uint32_t>(1, config_.buf_alloc / 4))
    c.credit_update_queued = queue_control(c, vsock::kOpCreditUpdate);
}

void VirtioVsock::maybe_finish(uint64_t id) {
  Connection* c = find(id);
  if (!c || c->state != Connection::State::kEstablished || !c->to_host.empty()) return;
  const bool guest_done = c->peer_shutdown & vsock::kShutdownSend;
  const bool host_done = c->host_eof || (c->peer_shutdown & vsock::kShutdownRcv);
  if (guest_done && host_done) close_connection(id, true);
}

// --- Packets for the guest ---------------------------------------------------------------

bool VirtioVsock::queue_control(const Control& ctl) {
  if (control_.size() >= kMaxControlPackets) return false;
  control_.push_back(ctl);
  return true;
}

bool VirtioVsock::queue_control(const Connection& c, uint16_t op, uint32_t flags) {
  return queue_control(Control{c.id, c.local_port, c.peer_port, op, flags});
}

void VirtioVsock::queue_rst(uint32_t local_port, uint32_t peer_port) {
  if (!queue_control(Control{0, local_port, peer_port, vsock::kOpRst, 0}))
    counters_.rst_dropped.fetch_add(1, std::memory_order_relaxed);
}

Header VirtioVsock::header_for(const Connection& c, uint16_t op) const {
  Header h;
  h.src_cid = vsock::kCidHost;
  h.dst_cid = config_.guest_cid;
  h.src_port = c.local_port;
  h.dst_port = c.peer_port;
  h.type = vsock::kTypeStream;
  h.op = op;
  h.buf_alloc = config_.buf_alloc;
  h.fwd_cnt = c.fwd_cnt;
  return h;
}

void VirtioVsock::fill_rx() {
  if (!active_ || !rxq_ || !mem_) return;
  Queue& q = *rxq_;
  const memory::GuestMemory& mem = *mem_;
  bool used = false;
  unsigned turns = 0;
  for (; turns < kRxBudget; ++turns) {
    if (!control_.empty()) {
      const Control ctl = control_.front();
      Connection* c = nullptr;
      Header h;
      if (ctl.conn_id != 0) {
        c = find(ctl.conn_id);
        if (!c) {  // closed meanwhile (its RST, if any, is queued separately)
          control_.pop_front();
          continue;
        }
        h = header_for(*c, ctl.op);
      } else {
        h.src_cid = vsock::kCidHost;
        h.dst_cid = config_.guest_cid;
        h.src_port = ctl.local_port;
        h.dst_port = ctl.peer_port;
        h.type = vsock::kTypeStream;
        h.op = ctl.op;
      }
      h.flags = ctl.flags;
      auto chain = q.pop(mem);
      if (!chain) break;
      if (!chain->ok() || chain->writable_len() < kHdrSize) {
        counters_.bad_rx_chains.fetch_add(1, std::memory_order_relaxed);
        q.add_used(mem, chain->head(), 0);
        used = true;
        continue;
      }
      uint8_t raw[kHdrSize];
      vsock::encode(h, raw);
      chain->write(mem, 0, raw);
      q.add_used(mem, chain->head(), static_cast<uint32_t>(kHdrSize));
      used = true;
      control_.pop_front();
      counters_.rx_packets.fetch_add(1, std::memory_order_relaxed);
      if (h.op == vsock::kOpRst) counters_.rst_sent.fetch_add(1, std::memory_order_relaxed);
      if (c) {
        c->last_fwd_cnt_sent = c->fwd_cnt;
        if (h.op == vsock::kOpCreditUpdate) {
          c->credit_update_queued = false;
          counters_.credit_updates_sent.fetch_add(1, std::memory_order_relaxed);
        }
      }
      continue;
    }
    if (!rx_ready_.empty()) {
      const int r = deliver_data(rx_ready_.front());
      if (r < 0) break;
      if (r > 0) used = true;
      continue;
    }
    break;
  }
  if (turns == kRxBudget && (!control_.empty() || !rx_ready_.empty())) kick_self();
  if (used && q.needs_notification(mem)) irq_->notify_queue(vsock::kRxQueue);
  // Host-side data is delivered from the event loop, not from a queue
  // notification: report a receive queue the guest broke ourselves.
  if (q.broken()) irq_->notify_needs_reset(q.error_message());
}

int VirtioVsock::deliver_data(uint64_t id) {
  rx_ready_.pop_front();
  Connection* c = find(id);
  if (!c) return 0;
  c->in_rx_ready = false;
  if (c->state != Connection::State::kEstablished || c->host_eof ||
      (c->peer_shutdown & vsock::kShutdownRcv)) {
    update_interest(*c);
    return 0;
  }
  const uint32_t credit = peer_credit(*c);
  if (credit == 0) {
    counters_.credit_stalls.fetch_add(1, std::memory_order_relaxed);
    if (!c->credit_request_sent) c->credit_request_sent = queue_control(*c, vsock::kOpCreditRequest);
    update_interest(*c);  // stops polling until the guest gives credit
    return 0;
  }
  Queue& q = *rxq_;
  const memory::GuestMemory& mem = *mem_;
  auto chain = q.pop(mem);
  if (!chain) {  // no rx buffers: keep our place, the socket is not polled meanwhile
    c->in_rx_ready = true;
    rx_ready_.push_front(id);
    return -1;
  }
  if (!chain->ok() || chain->writable_len() <= kHdrSize) {
    counters_.bad_rx_chains.fetch_add(1, std::memory_order_relaxed);
    q.add_used(mem, chain->head(), 0);
    c->in_rx_ready = true;
    rx_ready_.push_front(id);
    return 1;
  }
  const size_t want = std::min<size_t>({chain->writable_len() - kHdrSize, credit, kMaxPayload});
  // Read straight into the guest's buffers, after the header.
  iov_.clear();
  size_t skip = kHdrSize, remaining = want;
  for (const Buffer& b : chain->writable()) {
    if (remaining == 0 || iov_.size() >= IOV_MAX) break;
    if (b.len <= skip) {
      skip -= b.len;
      continue;
    }
    const size_t take = std::min<size_t>(b.len - skip, remaining);
    iov_.push_back({b.host.data() + skip, take});
    skip = 0;
    remaining -= take;
  }
  ssize_t n;
  do {
    n = ::readv(c->fd.get(), iov_.data(), static_cast<int>(iov_.size()));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    Header h = header_for(*c, vsock::kOpRw);
    h.len = static_cast<uint32_t>(n);
    uint8_t raw[kHdrSize];
    vsock::encode(h, raw);
    chain->write(mem, 0, raw);
    q.add_used(mem, chain->head(), static_cast<uint32_t>(kHdrSize + static_cast<size_t>(n)));
    c->tx_cnt += static_cast<uint32_t>(n);
    c->last_fwd_cnt_sent = c->fwd_cnt;
    counters_.rx_packets.fetch_add(1, std::memory_order_relaxed);
    counters_.rx_bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    // More may be waiting: take our turn again after the others (a read
    // that finds nothing puts the socket back on epoll).
    if (peer_credit(*c) > 0) {
      c->in_rx_ready = true;
      rx_ready_.push_back(id);
    } else {
      counters_.credit_stalls.fetch_add(1, std::memory_order_relaxed);
      if (!c->credit_request_sent)
        c->credit_request_sent = queue_control(*c, vsock::kOpCreditRequest);
      update_interest(*c);
    }
    return 1;
  }
  q.undo_pop();
  if (n == 0) {
    // EOF: the host process sends no more. If it closed its end entirely
    // (POLLHUP), it cannot receive either.
    c->host_eof = true;
    uint32_t flags = vsock::kShutdownSend;
    pollfd p{c->fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & POLLHUP)) flags |= vsock::kShutdownRcv;
    if (!queue_control(*c, vsock::kOpShutdown, flags)) {
      close_connection(id, true);
      return 0;
    }
    // The host process is gone altogether: the guest should answer RST
    // (once its reader is done); do not wait for that forever.
    if (flags == vsock::kShutdownBoth) set_deadline(*c, config_.shutdown_timeout_ms);
    update_interest(*c);
    maybe_finish(id);
    return 0;
  }
  if (would_block(errno)) {
    update_interest(*c);  // poll for input again
    return 0;
  }
  log::debug(errno_message("virtio-vsock: read from host socket", errno));
  close_connection(id, true);
  return 0;
}

void VirtioVsock::deliver_events() {
  if (!active_ || !event_pending_ || !evq_ || !mem_) return;
  Queue& q = *evq_;
  const memory::GuestMemory& mem = *mem_;
  bool used = false;
  for (uint32_t i = 0; i < q.size() && event_pending_; ++i) {
    auto chain = q.pop(mem);
    if (!chain) break;
    if (!chain->ok() || chain->writable_len() < vsock::kEventSize) {
      q.add_used(mem, chain->head(), 0);
      used = true;
      continue;
    }
    uint8_t ev[vsock::kEventSize];
    vsock::detail::put_le<uint32_t>(ev, vsock::kEventTransportReset);
    chain->write(mem, 0, ev);
    q.add_used(mem, chain->head(), static_cast<uint32_t>(vsock::kEventSize));
    used = true;
    event_pending_ = false;
  }
  if (used && q.needs_notification(mem)) irq_->notify_queue(vsock::kEventQueue);
}

// --- Packets from the guest ----------------------------------------------------------------

void VirtioVsock::process_tx() {
  if (!active_ || !txq_ || !mem_) return;
  tx_pending_ = false;
  Queue& q = *txq_;
  const memory::GuestMemory& mem = *mem_;
  bool used = false;
  unsigned handled = 0;
  for (int round = 0; round < 4 && handled < kTxBudget; ++round) {
    q.disable_notifications(mem);
    while (handled < kTxBudget) {
      auto chain = q.pop(mem);
      if (!chain) break;
      ++handled;
      if (chain->ok()) {
        handle_packet(*chain);
      } else {
        counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
        log::debug(std::string("virtio-vsock: bad tx chain: ") + chain->error_message());
      }
      q.add_used(mem, chain->head(), 0);
      used = true;
    }
    if (handled >= kTxBudget || q.broken() || !q.enable_notifications(mem)) break;
  }
  if (handled >= kTxBudget) {  // more may wait: continue after other work
    tx_pending_ = true;
    kick_self();
  }
  if (used && q.needs_notification(mem)) irq_->notify_queue(vsock::kTxQueue);
}

void VirtioVsock::handle_packet(const DescriptorChain& chain) {
  const memory::GuestMemory& mem = *mem_;
  if (chain.readable_len() < kHdrSize) {
    counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
    log::debug("virtio-vsock: tx packet shorter than its header");
    return;
  }
  uint8_t raw[kHdrSize];
  chain.read(mem, 0, raw);
  const Header h = vsock::decode(raw);
  // Not from this guest's CID or not for the host: nobody to answer.
  if (h.src_cid != config_.guest_cid || h.dst_cid != vsock::kCidHost) {
    counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
    log::debug("virtio-vsock: tx packet with wrong CIDs dropped");
    return;
  }
  Connection* c = find(h.dst_port, h.src_port);
  const bool bad_type = h.type != vsock::kTypeStream;
  const bool bad_len = h.len > kMaxPayload || h.len > chain.readable_len() - kHdrSize;
  if (bad_type || bad_len) {
    counters_.tx_dropped.fetch_add(1, std::memory_order_relaxed);
    log::debug(bad_type ? "virtio-vsock: tx packet of unsupported type"
                        : "virtio-vsock: tx packet length beyond its buffers");
    if (h.op == vsock::kOpRst) return;  // never answer an RST
    if (c)
      close_connection(c->id, true);
    else
      queue_rst(h.dst_port, h.src_port);
    return;
  }
  counters_.tx_packets.fetch_add(1, std::memory_order_relaxed);
  if (!c) {
    if (h.op == vsock::kOpRequest)
      guest_connect(h);
    else if (h.op != vsock::kOpRst)
      queue_rst(h.dst_port, h.src_port);
    return;
  }
  handle_for_connection(*c, h, chain);
}

void VirtioVsock::handle_for_connection(Connection& c, const Header& h,
                                        const DescriptorChain& chain) {
  using State = Connection::State;
  const uint64_t id = c.id;
  // Every packet carries the guest's current receive buffer state.
  c.peer_buf_alloc = h.buf_alloc;
  c.peer_fwd_cnt = h.fwd_cnt;
  if (peer_credit(c) > 0) c.credit_request_sent = false;

  switch (h.op) {
    case vsock::kOpRst:
      close_connection(id, false);
      return;
    case vsock::kOpResponse: {
      if (c.state != State::kConnecting) {
        close_connection(id, true);
        return;
      }
      c.state = State::kEstablished;
      c.has_deadline = false;
      counters_.host_connects.fetch_add(1, std::memory_order_relaxed);
      const std::string ok = "OK " + std::to_string(c.local_port) + "\n";
      auto dst = c.to_host.extend(ok.size(), ok.size());
      std::memcpy(dst.data(), ok.data(), ok.size());
      c.control_bytes += ok.size();
      break;
    }
    case vsock::kOpShutdown:
      if (c.state != State::kEstablished) {
        close_connection(id, true);
        return;
      }
      c.peer_shutdown |= h.flags & vsock::kShutdownBoth;
      break;
    case vsock::kOpRw: {
      if (c.state != State::kEstablished || (c.peer_shutdown & vsock::kShutdownSend)) {
        close_connection(id, true);
        return;
      }
      if (h.len == 0) break;
      // Credit: never more buffered than we advertised.
      if (c.guest_bytes_buffered() + h.len > config_.buf_alloc) {
        log::debug("virtio-vsock: guest exceeded its credit; resetting the connection");
        close_connection(id, true);
        return;
      }
      counters_.tx_bytes.fetch_add(h.len, std::memory_order_relaxed);
      const memory::GuestMemory& mem = *mem_;
      size_t sent = 0;
      if (c.to_host.empty()) {
        // Straight from guest memory to the socket.
        iov_.clear();
        size_t skip = kHdrSize, remaining = h.len;
        for (const Buffer& b : chain.readable()) {
          if (remaining == 0 || iov_.size() >= IOV_MAX) break;
          if (b.len <= skip) {
            skip -= b.len;
            continue;
          }
          const size_t take = std::min<size_t>(b.len - skip, remaining);
          iov_.push_back({b.host.data() + skip, take});
          skip = 0;
          remaining -= take;
        }
        msghdr m{};
        m.msg_iov = iov_.data();
        m.msg_iovlen = iov_.size();
        ssize_t n;
        do {
          n = ::sendmsg(c.fd.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && !would_block(errno)) {
          log::debug(errno_message("virtio-vsock: write to host socket", errno));
          close_connection(id, true);
          return;
        }
        if (n > 0) sent = static_cast<size_t>(n);
        if (sent < h.len) counters_.host_write_blocked.fetch_add(1, std::memory_order_relaxed);
        c.fwd_cnt += static_cast<uint32_t>(sent);
      }
      if (sent < h.len) {
        const size_t rest = h.len - sent;
        auto dst = c.to_host.extend(rest, config_.buf_alloc + kMaxConnectLine);
        const size_t got = chain.read(mem, kHdrSize + sent, dst);
        if (got < rest) std::fill(dst.begin() + static_cast<ptrdiff_t>(got), dst.end(), 0);
      }
      break;
    }
    case vsock::kOpCreditUpdate:
      break;  // the credit was taken above
    case vsock::kOpCreditRequest:
      if (c.state == State::kEstablished && !c.credit_update_queued)
        c.credit_update_queued = queue_control(c, vsock::kOpCreditUpdate);
      break;
    case vsock::kOpRequest:  // a second REQUEST on a live connection
    default:
      close_connection(id, true);
      return;
  }
  // Writes what is buffered, applies a half-close, updates credit and the
  // epoll interest (new credit resumes reading), closes a finished connection.
  flush_to_host(id);
}

void VirtioVsock::guest_connect(const Header& h) {
  auto fail = [&](const std::string& why) {
    counters_.guest_connect_fails.fetch_add(1, std::memory_order_relaxed);
    log::debug("virtio-vsock: guest connect to port " + std::to_string(h.dst_port) + ": " + why);
    queue_rst(h.dst_port, h.src_port);
  };
  if (conns_.size() >= config_.max_connections) return fail("connection limit reached");
  const std::string path = config_.uds_path + "_" + std::to_string(h.dst_port);
  sockaddr_un addr;
  socklen_t len;
  if (!make_unix_addr(path, &addr, &len)) return fail("socket path too long");
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fail(errno_message("socket", errno));
  // A Unix connect does not wait: it succeeds, or fails (EAGAIN when the
  // listener's backlog is full).
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) < 0)
    return fail(errno_message(path, errno));
  Connection& c = add_connection(std::move(fd));
  c.state = Connection::State::kEstablished;
  c.local_port = h.dst_port;
  c.peer_port = h.src_port;
  c.peer_buf_alloc = h.buf_alloc;
  c.peer_fwd_cnt = h.fwd_cnt;
  ports_[{c.local_port, c.peer_port}] = c.id;
  if (!queue_control(c, vsock::kOpResponse)) {
    close_connection(c.id, false);
    counters_.guest_connect_fails.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  counters_.guest_connects.fetch_add(1, std::memory_order_relaxed);
  update_interest(c);
}

}  // namespace rz::virtio
