#include "virtio/net.h"

#include <sys/epoll.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "util/error.h"
#include "util/log.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {

namespace {

// iovecs one readv()/writev() takes.
constexpr size_t kMaxIov = IOV_MAX;
// Ethernet header: a received frame shorter than header + this is a runt.
constexpr size_t kEthHdrLen = 14;
// Log the first few back-end errors at warn level, the rest at debug.
constexpr uint64_t kLoudErrors = 5;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void put_le16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

// --- MAC addresses --------------------------------------------------------------

std::optional<MacAddress> parse_mac(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  const char sep = text[2];
  if (sep != ':' && sep != '-') return std::nullopt;
  MacAddress mac{};
  for (size_t i = 0; i < 6; ++i) {
    const size_t at = 3 * i;
    if (i > 0 && text[at - 1] != sep) return std::nullopt;
    const int hi = hex_digit(text[at]);
    const int lo = hex_digit(text[at + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return mac;
}

std::string format_mac(const MacAddress& mac) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i > 0) s += ':';
    s += kHex[mac[i] >> 4];
    s += kHex[mac[i] & 0xf];
  }
  return s;
}

MacAddress random_mac() {
  MacAddress mac{};
  size_t got = 0;
  while (got < mac.size()) {
    const ssize_t r = ::getrandom(mac.data() + got, mac.size() - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error(errno_message("getrandom (for a MAC address)", errno));
    }
    got += static_cast<size_t>(r);
  }
  mac[0] = static_cast<uint8_t>((mac[0] & 0xfc) | 0x02);  // unicast, locally administered
  return mac;
}

NetOffloads offloads_from_features(uint64_t f) {
  NetOffloads o;
  o.csum = (f & feature_bit(kNetFGuestCsum)) != 0;
  if (o.csum) {
    o.tso4 = (f & feature_bit(kNetFGuestTso4)) != 0;
    o.tso6 = (f & feature_bit(kNetFGuestTso6)) != 0;
    o.tso_ecn = (o.tso4 || o.tso6) && (f & feature_bit(kNetFGuestEcn)) != 0;
    o.ufo = (f & feature_bit(kNetFGuestUfo)) != 0;
  }
  return o;
}

// --- VirtioNet --------------------------------------------------------------------

VirtioNet::VirtioNet(EventLoop& loop, std::unique_ptr<NetBackend> backend,
                     const NetConfig& config)
    : loop_(loop), backend_(std::move(backend)), config_(config) {
  if (!backend_) throw Error("virtio-net: no back-end");
  const uint16_t qs = config_.queue_size;
  if (qs == 0 || (qs & (qs - 1)) != 0 || qs > kMaxQueueSize) {
    throw Error("virtio-net: queue size " + std::to_string(qs) + " is not a power of 2 in 1..32768");
  }
  if (config_.mtu && *config_.mtu < 68) {
    throw UsageError("virtio-net: MTU " + std::to_string(*config_.mtu) + " is below 68");
  }

  std::copy(config_.mac.begin(), config_.mac.end(), config_space_.begin() + kNetCfgMac);
  put_le16(&config_space_[kNetCfgStatus], kNetSLinkUp);
  put_le16(&config_space_[kNetCfgMaxVirtqueuePairs], 1);
  put_le16(&config_space_[kNetCfgMtu], config_.mtu.value_or(0));
  put_le32(&config_space_[kNetCfgSpeed], 0xffffffffu);  // unknown
  config_space_[kNetCfgDuplex] = 0xff;                  // unknown

  rx_bounce_.resize(kMaxFrameWithHeader);
  tx_bounce_.resize(kMaxFrameWithHeader);
  iov_.reserve(kMaxIov);
  rx_lens_.reserve(qs);
}

VirtioNet::~VirtioNet() { detach_backend(); }

uint16_t VirtioNet::device_type() const { return kDeviceIdNet; }

uint64_t VirtioNet::device_features() const {
  uint64_t f = feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFIndirectDesc) |
               feature_bit(kVirtioFEventIdx) | feature_bit(kNetFMac) | feature_bit(kNetFStatus) |
               feature_bit(kNetFCsum) | feature_bit(kNetFGuestCsum) |
               feature_bit(kNetFGuestTso4) | feature_bit(kNetFGuestTso6) |
               feature_bit(kNetFGuestEcn) | feature_bit(kNetFHostTso4) |
               feature_bit(kNetFHostTso6) | feature_bit(kNetFHostEcn) |
               feature_bit(kNetFMrgRxbuf);
  if (config_.mtu) f |= feature_bit(kNetFMtu);
  return f;
}

void VirtioNet::read_config(uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = offset + i;
    data[i] = (at >= offset && at < config_space_.size()) ? config_space_[at] : 0;
  }
}

NetStats VirtioNet::stats() const {
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  NetStats s;
  s.tx_frames = get(counters_.tx_frames);
  s.tx_bytes = get(counters_.tx_bytes);
  s.tx_dropped = get(counters_.tx_dropped);
  s.tx_would_block = get(counters_.tx_would_block);
  s.rx_frames = get(counters_.rx_frames);
  s.rx_bytes = get(counters_.rx_bytes);
  s.rx_dropped = get(counters_.rx_dropped);
  s.rx_bad_chains = get(counters_.rx_bad_chains);
  s.rx_starved = get(counters_.rx_starved);
  s.backend_wakeups = get(counters_.backend_wakeups);
  return s;
}

bool VirtioNet::activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                         std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) {
  if (mem_ != nullptr) reset();
  if (!irq) {
    log::error("virtio-net: activated without an interrupt");
    return false;
  }
  if (queues.size() < 2 || queues[kNetRxQueue] == nullptr || queues[kNetTxQueue] == nullptr) {
    log::error("virtio-net: activated without its receive and transmit queues");
    return false;
  }
  for (uint16_t i : {kNetRxQueue, kNetTxQueue}) {
    if (!queues[i]->is_valid(mem)) {
      log::error(std::string("virtio-net: the driver's ") + (i == kNetRxQueue ? "receive" : "transmit") +
                 " queue is not usable (not enabled, bad size or rings outside guest memory)");
      return false;
    }
  }
  try {
    backend_->set_offloads(offloads_from_features(negotiated_features));
  } catch (const Error& e) {
    log::error(std::string("virtio-net: ") + e.what());
    return false;
  }

  features_ = negotiated_features;
  mergeable_ = (features_ & feature_bit(kNetFMrgRxbuf)) != 0;
  guest_csum_ = (features_ & feature_bit(kNetFGuestCsum)) != 0;
  for (Queue* q : {queues[kNetRxQueue], queues[kNetTxQueue]}) q->set_features(features_);
  rxq_ = queues[kNetRxQueue];
  txq_ = queues[kNetTxQueue];
  mem_ = &mem;
  irq_ = std::move(irq);
  backend_failed_ = false;

  try {
    loop_.add(backend_->fd(), EPOLLIN, [this](uint32_t events) { on_backend_event(events); });
  } catch (const Error& e) {
    log::error(std::string("virtio-net: ") + e.what());
    mem_ = nullptr;
    rxq_ = txq_ = nullptr;
    irq_.reset();
    return false;
  }
  registered_ = true;
  interest_ = EPOLLIN;
  rx_polling_.store(true, std::memory_order_relaxed);
  log::debug("virtio-net: " + backend_->describe() + " active, mac " + format_mac(config_.mac) +
             (mergeable_ ? ", mergeable rx buffers" : ""));

  // Frames the driver queued before DRIVER_OK would otherwise wait for a kick.
  process_tx();
  finish_turn();
  return true;
}

void VirtioNet::reset() {
  detach_backend();
  tx_retry_.reset();
  drop_rx_cache();
  pending_ = {};
  tx_wait_ = false;
  rx_used_ = tx_used_ = false;
  mem_ = nullptr;
  rxq_ = txq_ = nullptr;
  irq_.reset();
  features_ = 0;
  mergeable_ = guest_csum_ = false;
  rx_broken_logged_ = tx_broken_logged_ = false;
  try {
    backend_->set_offloads({});
  } catch (const Error& e) {
    log::warn(std::string("virtio-net: ") + e.what());
  }
}

void VirtioNet::detach_backend() {
  if (!registered_) return;
  loop_.remove(backend_->fd());
  registered_ = false;
  interest_ = 0;
  rx_polling_.store(false, std::memory_order_relaxed);
}

void VirtioNet::drop_rx_cache() {
  rx_cache_.clear();
  rx_cache_bytes_ = 0;
}

// --- Event plumbing ---------------------------------------------------------------

void VirtioNet::process_queue(uint16_t index) {
  if (mem_ == nullptr) return;
  if (index == kNetTxQueue) {
    process_tx();
  } else if (index == kNetRxQueue) {
    // New receive buffers. If input polling was off (starved) or a frame
    // waits for buffers, go on now; otherwise epoll is already watching.
    if (!rx_polling_.load(std::memory_order_relaxed) || pending_.active) {
      set_rx_polling(true);
      process_rx();
    }
  }
  finish_turn();
}

void VirtioNet::on_backend_event(uint32_t events) {
  if (mem_ == nullptr) return;
  count(counters_.backend_wakeups);
  if (events & EPOLLOUT) process_tx();
  if (events & EPOLLIN) process_rx();
  if ((events & (EPOLLERR | EPOLLHUP)) && !backend_failed_) {
    log::error("virtio-net: " + backend_->describe() +
               " failed (error or hang-up on its fd); the device stops using it");
    backend_failed_ = true;
    detach_backend();
  }
  finish_turn();
}

void VirtioNet::finish_turn() {
  if (mem_ == nullptr) return;
  if (rx_used_) {
    rx_used_ = false;
    if (rxq_->needs_notification(*mem_)) irq_->notify_queue(kNetRxQueue);
  }
  if (tx_used_) {
    tx_used_ = false;
    if (txq_->needs_notification(*mem_)) irq_->notify_queue(kNetTxQueue);
  }
  update_interest();
}

void VirtioNet::set_rx_polling(bool on) {
  if (backend_failed_) on = false;
  const bool was = rx_polling_.exchange(on, std::memory_order_relaxed);
  if (was && !on) count(counters_.rx_starved);
}

void VirtioNet::update_interest() {
  if (!registered_) return;
  const uint32_t want = (rx_polling_.load(std::memory_order_relaxed) ? EPOLLIN : 0u) |
                        (tx_wait_ ? EPOLLOUT : 0u);
  if (want == interest_) return;
  loop_.modify(backend_->fd(), want);
  interest_ = want;
}

// --- Transmit ---------------------------------------------------------------------

void VirtioNet::process_tx() {
  if (txq_ == nullptr) return;
  unsigned done = 0;
  tx_wait_ = false;

  if (tx_retry_) {
    if (!transmit(*tx_retry_)) {
      tx_wait_ = true;
      return;
    }
    txq_->add_used(*mem_, tx_retry_->head(), 0);
    tx_retry_.reset();
    tx_used_ = true;
    ++done;
  }

  for (;;) {
    txq_->disable_notifications(*mem_);
    while (done < kTxBudget) {
      auto chain = txq_->pop(*mem_);
      if (!chain) break;
      if (!transmit(*chain)) {
        tx_retry_ = std::move(chain);
        tx_wait_ = true;  // EPOLLOUT brings us back; notifications stay off
        return;
      }
      txq_->add_used(*mem_, chain->head(), 0);
      tx_used_ = true;
      ++done;
    }
    if (done >= kTxBudget) {
      // More may be waiting: come back on the next loop turn (EPOLLOUT on
      // the back-end fires at once), after other fds had their turn.
      tx_wait_ = true;
      return;
    }
    if (txq_->broken()) {
      if (!tx_broken_logged_) {
        log::error(std::string("virtio-net: transmit queue broken: ") + txq_->error_message());
        tx_broken_logged_ = true;
        irq_->notify_needs_reset(txq_->error_message());
      }
      return;
    }
    if (!txq_->enable_notifications(*mem_)) return;  // empty, and the driver will kick
  }
}

bool VirtioNet::transmit(DescriptorChain& chain) {
  if (!chain.ok()) {
    count(counters_.tx_dropped);
    log::debug(std::string("virtio-net: dropping a malformed transmit chain: ") +
               chain.error_message());
    return true;
  }
  const uint32_t len = chain.readable_len();
  if (len < kVnetHdrLen || len > kMaxFrameWithHeader) {
    count(counters_.tx_dropped);
    log::debug("virtio-net: dropping a transmit frame of " + std::to_string(len) +
               " bytes (header included)");
    return true;
  }
  if (backend_failed_) {
    count(counters_.tx_dropped);
    return true;
  }

  iov_.clear();
  const auto bufs = chain.readable();
  if (bufs.size() <= kMaxIov) {
    for (const Buffer& b : bufs) iov_.push_back(iovec{b.host.data(), b.len});
  } else {
    // More pieces than writev() takes: gather them first.
    const size_t n = chain.read(*mem_, 0, std::span<uint8_t>(tx_bounce_.data(), len));
    iov_.push_back(iovec{tx_bounce_.data(), n});
  }

  const ssize_t r = backend_->write_frame(iov_);
  if (r == -EAGAIN || r == -EWOULDBLOCK) {
    count(counters_.tx_would_block);
    return false;
  }
  if (r < 0) {
    count(counters_.tx_dropped);
    const std::string msg = errno_message("virtio-net: " + backend_->describe() +
                                              " refused a frame of " + std::to_string(len) + " bytes",
                                          static_cast<int>(-r));
    if (++tx_error_logs_ <= kLoudErrors) {
      log::warn(msg);
    } else {
      log::debug(msg);
    }
    return true;
  }
  count(counters_.tx_frames);
  count(counters_.tx_bytes, len);
  return true;
}

// --- Receive ----------------------------------------------------------------------

void VirtioNet::process_rx() {
  if (rxq_ == nullptr || backend_failed_) return;
  for (unsigned i = 0; i < kRxBudget; ++i) {
    if (!receive_one()) break;
  }
}

void VirtioNet::refill_rx_cache(size_t want_bytes) {
  const size_t qsize = rxq_->size();
  for (size_t i = 0; i < qsize && rx_cache_bytes_ < want_bytes && rx_cache_.size() < qsize; ++i) {
    auto chain = rxq_->pop(*mem_);
    if (!chain) break;
    if (!chain->ok() || chain->writable_len() < kVnetHdrLen ||
        chain->writable().size() >= kMaxIov) {
      // Unusable for a frame: give it back empty.
      count(counters_.rx_bad_chains);
      log::debug(std::string("virtio-net: returning an unusable receive chain: ") +
                 (chain->ok() ? "too small or too fragmented" : chain->error_message()));
      rxq_->add_used(*mem_, chain->head(), 0);
      rx_used_ = true;
      continue;
    }
    rx_cache_bytes_ += chain->writable_len();
    rx_cache_.push_back(std::move(*chain));
  }
  if (rxq_->broken() && !rx_broken_logged_) {
    log::error(std::string("virtio-net: receive queue broken: ") + rxq_->error_message());
    rx_broken_logged_ = true;
    irq_->notify_needs_reset(rxq_->error_message());
  }
}

bool VirtioNet::receive_one() {
  if (pending_.active && !continue_pending()) {
    set_rx_polling(false);
    return false;
  }

  refill_rx_cache(mergeable_ ? kMaxFrameWithHeader : 1);
  if (rx_cache_.empty()) {
    // The guest is not taking packets: leave them in the back-end (whose
    // queue is bounded) until it posts buffers and notifies us.
    set_rx_polling(false);
    return false;
  }

  // Scatter straight into the guest's buffers (all cached chains with
  // mergeable buffers, the first one otherwise), the bounce buffer last to
  // catch what does not fit.
  iov_.clear();
  size_t chains = 0;
  size_t cap = 0;
  for (const DescriptorChain& c : rx_cache_) {
    const auto bufs = c.writable();
    if (iov_.size() + bufs.size() + 1 > kMaxIov) break;
    for (const Buffer& b : bufs) iov_.push_back(iovec{b.host.data(), b.len});
    cap += c.writable_len();
    ++chains;
    if (!mergeable_) break;
  }
  iov_.push_back(iovec{rx_bounce_.data(), rx_bounce_.size()});

  const ssize_t r = backend_->read_frame(iov_);
  if (r == 0) return false;  // end of file (a closed socket back-end), not a frame
  if (r < 0) {
    if (r != -EAGAIN && r != -EWOULDBLOCK) {
      const std::string msg = errno_message("virtio-net: reading from " + backend_->describe(),
                                            static_cast<int>(-r));
      if (++rx_error_logs_ <= kLoudErrors) {
        log::warn(msg);
      } else {
        log::debug(msg);
      }
    }
    return false;
  }
  const size_t n = static_cast<size_t>(r);
  if (n < kVnetHdrLen + kEthHdrLen || n >= cap + rx_bounce_.size()) {
    // A runt, or a frame that may have been cut short.
    count(counters_.rx_dropped);
    log::debug("virtio-net: dropping a received frame of " + std::to_string(n) + " bytes");
    return true;
  }

  if (n <= cap) {
    rx_lens_.clear();
    size_t left = n;
    for (size_t i = 0; left > 0; ++i) {
      const size_t take = std::min<size_t>(left, rx_cache_[i].writable_len());
      rx_lens_.push_back(static_cast<uint32_t>(take));
      left -= take;
    }
    complete_rx(rx_lens_.size(), rx_lens_);
    return true;
  }

  if (!mergeable_) {
    count(counters_.rx_dropped);
    log::debug("virtio-net: dropping a received frame of " + std::to_string(n) +
               " bytes: the receive buffer holds " + std::to_string(cap));
    return true;
  }

  // Mergeable buffers: the frame's tail is in the bounce buffer and goes
  // into further chains, which may have to wait for the guest.
  rx_lens_.clear();
  for (size_t i = 0; i < chains; ++i) rx_lens_.push_back(rx_cache_[i].writable_len());
  pending_ = PendingRx{true, chains, 0, n - cap};
  if (!continue_pending()) {
    set_rx_polling(false);
    return false;
  }
  return true;
}

bool VirtioNet::continue_pending() {
  while (pending_.remaining > 0) {
    if (pending_.chains == rx_cache_.size()) {
      refill_rx_cache(rx_cache_bytes_ + pending_.remaining);
      if (pending_.chains == rx_cache_.size()) {
        if (rx_cache_.size() < rxq_->size() && !rxq_->broken()) return false;  // wait
        // Every descriptor the queue has is already here and the frame still
        // does not fit: it never will.
        count(counters_.rx_dropped);
        log::debug("virtio-net: dropping a received frame larger than the whole receive queue");
        pending_ = {};
        return true;
      }
    }
    const DescriptorChain& c = rx_cache_[pending_.chains];
    const size_t take = std::min<size_t>(pending_.remaining, c.writable_len());
    const size_t w =
        c.write(*mem_, 0, std::span<const uint8_t>(rx_bounce_.data() + pending_.offset, take));
    if (w != take) {  // cannot happen: the chain was validated against guest memory
      count(counters_.rx_dropped);
      pending_ = {};
      return true;
    }
    rx_lens_.push_back(static_cast<uint32_t>(w));
    ++pending_.chains;
    pending_.offset += w;
    pending_.remaining -= w;
  }
  complete_rx(pending_.chains, rx_lens_);
  pending_ = {};
  return true;
}

void VirtioNet::complete_rx(size_t chains, std::span<const uint32_t> lens) {
  const DescriptorChain& first = rx_cache_.front();
  // The back-end wrote the first 10 bytes of the header; num_buffers is ours.
  uint8_t num[2];
  put_le16(num, static_cast<uint16_t>(chains));
  first.write(*mem_, kVnetHdrNumBuffersOffset, num);
  if (!guest_csum_) {
    // Without GUEST_CSUM the flags must be 0 (the back-end may have set
    // DATA_VALID); the frame is fully checksummed then.
    const uint8_t zero = 0;
    first.write(*mem_, kVnetHdrFlagsOffset, std::span<const uint8_t>(&zero, 1));
  }
  uint64_t total = 0;
  for (size_t i = 0; i < chains; ++i) {
    const DescriptorChain& c = rx_cache_.front();
    rxq_->add_used(*mem_, c.head(), lens[i]);
    total += lens[i];
    rx_cache_bytes_ -= c.writable_len();
    rx_cache_.pop_front();
  }
  rx_used_ = true;
  count(counters_.rx_frames);
  count(counters_.rx_bytes, total);
}

}  // namespace rz::virtio
