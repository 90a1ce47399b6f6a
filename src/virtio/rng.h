// virtio-rng, the entropy device (virtio 1.2, section 5.4): one request
// queue whose device-writable buffers the device fills with random bytes
// from the host's getrandom(). No device configuration, no device features.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "virtio/device.h"

namespace rz::virtio {

class VirtioRng : public VirtioDevice {
 public:
  // Most bytes given for one chain; a larger buffer gets this many (the
  // driver sees the length in the used ring, 5.4.6.1 allows fewer).
  static constexpr uint32_t kMaxBytesPerChain = 64 * 1024;
  // Where the bytes come from: fills all of `out` or returns false.
  using Source = std::function<bool(std::span<uint8_t> out)>;

  // `queue_size`: the queue's maximum size (a power of 2). `source` defaults
  // to getrandom(2).
  explicit VirtioRng(uint16_t queue_size = 256, Source source = {});

  uint16_t device_type() const override;
  std::string name() const override { return "virtio-rng"; }
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 1; }
  uint16_t queue_max_size(uint16_t) const override { return queue_size_; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  bool activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) override;
  void process_queue(uint16_t index) override;
  void reset() override;

  // Bytes handed to the guest so far (any thread).
  uint64_t bytes_served() const { return bytes_served_.load(); }

  // getrandom(2) until `out` is full; false on a hard error.
  static bool host_random(std::span<uint8_t> out);

 private:
  uint32_t serve(const DescriptorChain& chain);

  const uint16_t queue_size_;
  Source source_;
  const memory::GuestMemory* mem_ = nullptr;
  Queue* queue_ = nullptr;
  std::shared_ptr<Interrupt> irq_;
  std::atomic<uint64_t> bytes_served_{0};
};

}  // namespace rz::virtio
