// The transport-independent side of a virtio device (virtio 1.2, chapter 5):
// what a block, net, rng, console, vsock or balloon device implements. The
// virtio-pci transport (pci_transport.h) owns the registers, the feature
// negotiation and the queues' configuration; a device sees only its queues,
// guest memory and a way to interrupt the driver.
//
// Threading: activate(), process_queue() and reset() are called on the
// machine's event-loop thread (never a vCPU thread); read_config() and
// write_config() come from vCPU threads. A device protects what they share.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "util/event_loop.h"
#include "virtio/queue.h"

namespace rz::virtio {

// Provided by the transport: raises the driver's interrupt for a queue
// (used-buffer notification) or for a configuration change. Thread-safe.
class Interrupt {
 public:
  virtual ~Interrupt() = default;
  virtual void notify_queue(uint16_t queue_index) = 0;
  virtual void notify_config() = 0;
  // The device found one of its queues broken (Queue::broken()) outside a
  // queue notification, e.g. on an I/O thread: the transport sets
  // DEVICE_NEEDS_RESET and sends a configuration change notification, as it
  // does itself for a queue that breaks while it notifies the device. Any
  // thread; repeated calls are harmless.
  virtual void notify_needs_reset(const char* /*why*/) {}
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual uint16_t device_type() const = 0;     // virtio device ID (virtio_defs.h)
  virtual std::string name() const = 0;         // "virtio-blk", for logs
  // Feature bits the device offers, including VIRTIO_F_VERSION_1 and, where
  // the device supports them, VIRTIO_RING_F_INDIRECT_DESC / EVENT_IDX.
  virtual uint64_t device_features() const = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t queue_max_size(uint16_t /*queue*/) const { return 256; }

  // Device-specific configuration space (offset from its start). Reads
  // beyond its end return zeros; writes to read-only fields are ignored.
  virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write_config(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}

  // The driver set DRIVER_OK. `queues` has num_queues() entries (a queue the
  // driver did not enable has ready() == false); the pointers stay valid
  // until reset(). Returns false if the device cannot start (the transport
  // then sets DEVICE_NEEDS_RESET).
  virtual bool activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                        std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) = 0;
  // The driver notified queue `index` (its ioeventfd fired).
  virtual void process_queue(uint16_t index) = 0;
  // The driver reset the device (status 0) or the machine is stopping: stop
  // touching the queues and guest memory, drop in-flight requests, and
  // unregister any fds from the event loop.
  virtual void reset() = 0;
};

}  // namespace rz::virtio
