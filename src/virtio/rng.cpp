#include "virtio/rng.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>

#include "util/log.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {
namespace {

// Rounds of "drain the ring, re-enable notifications" per process_queue():
// a guest that keeps refilling the ring as fast as it is drained cannot keep
// the event loop to itself. What is left waits for the next notification.
constexpr int kMaxRounds = 16;

}  // namespace

VirtioRng::VirtioRng(uint16_t queue_size, Source source)
    : queue_size_(queue_size), source_(source ? std::move(source) : Source(&VirtioRng::host_random)) {}

uint16_t VirtioRng::device_type() const { return kDeviceIdEntropy; }

uint64_t VirtioRng::device_features() const {
  return feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFIndirectDesc) |
         feature_bit(kVirtioFEventIdx);
}

void VirtioRng::read_config(uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);  // 5.4.4: no device configuration
}

bool VirtioRng::host_random(std::span<uint8_t> out) {
  size_t done = 0;
  for (int tries = 0; done < out.size() && tries < 1000; ++tries) {
    const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
      return false;
    }
  }
  return done == out.size();
}

bool VirtioRng::activate(const memory::GuestMemory& mem, uint64_t, std::vector<Queue*> queues,
                         std::shared_ptr<Interrupt> irq) {
  if (queues.size() != 1 || !queues[0] || !irq) return false;
  mem_ = &mem;
  queue_ = queues[0];
  irq_ = std::move(irq);
  return true;
}

void VirtioRng::reset() {
  mem_ = nullptr;
  queue_ = nullptr;
  irq_.reset();
}

// Fills the chain's device-writable buffers, at most kMaxBytesPerChain in
// all; returns the bytes written. A chain with nothing writable (5.4.6.1:
// the driver must give device-writable buffers) gets 0.
uint32_t VirtioRng::serve(const DescriptorChain& chain) {
  uint32_t budget = kMaxBytesPerChain;
  uint32_t written = 0;
  for (const Buffer& b : chain.writable()) {
    if (budget == 0) break;
    const uint32_t n = std::min(budget, b.len);
    // The buffer's host span was validated against guest memory by pop().
    if (!source_(b.host.first(n))) {
      log::warn("virtio-rng: host entropy source failed");
      break;
    }
    written += n;
    budget -= n;
  }
  return written;
}

void VirtioRng::process_queue(uint16_t index) {
  if (index != 0 || !queue_ || !mem_) return;
  Queue& q = *queue_;
  const memory::GuestMemory& mem = *mem_;
  bool used_any = false;
  for (int round = 0; round < kMaxRounds; ++round) {
    q.disable_notifications(mem);
    // Bounded by the ring: pop() never returns more than Queue Size entries
    // without the guest adding new ones, and the rounds bound that.
    for (uint32_t n = 0; n < q.size(); ++n) {
      auto chain = q.pop(mem);
      if (!chain) break;
      const uint32_t len = chain->ok() ? serve(*chain) : 0;
      if (!chain->ok())
        log::debug(std::string("virtio-rng: bad chain: ") + chain->error_message());
      q.add_used(mem, chain->head(), len);
      bytes_served_ += len;
      used_any = true;
    }
    if (q.broken() || !q.enable_notifications(mem)) break;
  }
  // The transport sees q.broken() after we return and sets DEVICE_NEEDS_RESET.
  if (used_any && q.needs_notification(mem)) irq_->notify_queue(0);
}

}  // namespace rz::virtio
