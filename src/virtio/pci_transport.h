// The virtio-pci transport, modern (non-transitional) only: virtio 1.2,
// section 4.1. A PciDevice that wraps a VirtioDevice and gives the driver
// the common configuration, notification, ISR and device configuration
// structures in one 64-bit memory BAR, described by vendor-specific PCI
// capabilities, plus MSI-X (table and PBA in the same BAR).
//
// BAR 0 layout (offsets fixed, sizes from the queue count):
//   0x0000  common configuration (struct virtio_pci_common_cfg, 0x3c bytes)
//   0x1000  ISR status (1 byte, read-to-clear)
//   0x2000  device-specific configuration (VirtioDevice::read/write_config)
//   0x3000  notifications: queue i at 0x3000 + 4 * i (notify_off_multiplier 4)
//   then    MSI-X table (num_queues + 1 vectors, at most 2048), then the PBA
//
// Threading. Registers are accessed from vCPU threads (serialized by a
// register lock). All VirtioDevice calls (activate, process_queue, reset)
// run on the EventLoop thread; register writes that need one (DRIVER_OK,
// reset) post the work to the loop and wait for it, so the event loop must
// be running whenever the guest runs and when reset_device() is called.
// Queue notifications arrive on one eventfd per queue (registered with
// KVM_IOEVENTFD by the machine, so a kick never exits to a vCPU thread of
// the VMM; a kick that does arrive as an MMIO write signals the same eventfd).
// Without an event loop (unit tests) everything runs on the calling thread,
// which must then be the only one using the device.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "memory/guest_memory.h"
#include "pci/pci_device.h"
#include "util/event_loop.h"
#include "util/fd.h"
#include "virtio/device.h"
#include "virtio/queue.h"

namespace rz::virtio {

// --- virtio-pci constants (spec 4.1.4) ----------------------------------------
inline constexpr uint8_t kPciCapVendor = 0x09;      // PCI_CAP_ID_VNDR
inline constexpr uint8_t kPciCapCommonCfg = 1;      // VIRTIO_PCI_CAP_COMMON_CFG
inline constexpr uint8_t kPciCapNotifyCfg = 2;      // VIRTIO_PCI_CAP_NOTIFY_CFG
inline constexpr uint8_t kPciCapIsrCfg = 3;         // VIRTIO_PCI_CAP_ISR_CFG
inline constexpr uint8_t kPciCapDeviceCfg = 4;      // VIRTIO_PCI_CAP_DEVICE_CFG
inline constexpr uint8_t kPciCapPciCfg = 5;         // VIRTIO_PCI_CAP_PCI_CFG
inline constexpr uint16_t kMsiNoVector = 0xffff;    // VIRTIO_MSI_NO_VECTOR
inline constexpr uint8_t kIsrQueue = 0x1;           // ISR bit 0: used buffer notification
inline constexpr uint8_t kIsrConfig = 0x2;          // ISR bit 1: configuration change

// Offsets inside struct virtio_pci_common_cfg (spec 4.1.4.3).
namespace common_cfg {
inline constexpr uint32_t kDeviceFeatureSelect = 0x00;  // le32 RW
inline constexpr uint32_t kDeviceFeature = 0x04;        // le32 RO
inline constexpr uint32_t kDriverFeatureSelect = 0x08;  // le32 RW
inline constexpr uint32_t kDriverFeature = 0x0c;        // le32 RW
inline constexpr uint32_t kConfigMsixVector = 0x10;     // le16 RW
inline constexpr uint32_t kNumQueues = 0x12;            // le16 RO
inline constexpr uint32_t kDeviceStatus = 0x14;         // u8 RW
inline constexpr uint32_t kConfigGeneration = 0x15;     // u8 RO
inline constexpr uint32_t kQueueSelect = 0x16;          // le16 RW
inline constexpr uint32_t kQueueSize = 0x18;            // le16 RW
inline constexpr uint32_t kQueueMsixVector = 0x1a;      // le16 RW
inline constexpr uint32_t kQueueEnable = 0x1c;          // le16 RW
inline constexpr uint32_t kQueueNotifyOff = 0x1e;       // le16 RO
inline constexpr uint32_t kQueueDesc = 0x20;            // le64 RW
inline constexpr uint32_t kQueueDriver = 0x28;          // le64 RW
inline constexpr uint32_t kQueueDevice = 0x30;          // le64 RW
inline constexpr uint32_t kQueueNotifyData = 0x38;      // le16 RO (reads 0)
inline constexpr uint32_t kQueueReset = 0x3a;           // le16 RW (RING_RESET not offered)
inline constexpr uint32_t kSize = 0x3c;
}  // namespace common_cfg

// PCI class code (24 bits) the transport gives a device type: what QEMU
// uses for the same device, so a guest's lspci looks familiar.
uint32_t pci_class_for(uint16_t device_type);

class VirtioPciDevice : public pci::PciDevice {
 public:
  static constexpr uint8_t kBar = 0;
  static constexpr uint32_t kCommonCfgOffset = 0x0000;
  static constexpr uint32_t kIsrOffset = 0x1000;
  static constexpr uint32_t kDeviceCfgOffset = 0x2000;
  static constexpr uint32_t kDeviceCfgSize = 0x1000;
  static constexpr uint32_t kNotifyOffset = 0x3000;
  static constexpr uint32_t kNotifyOffMultiplier = 4;
  static constexpr uint16_t kSubsystemId = 0x1100;  // >= 0x40 for modern devices (4.1.2.1)
  static constexpr uint16_t kMaxQueues = 1024;

  // `mem` must outlive the device. `loop` may be null (unit tests: every
  // device call runs on the calling thread). Throws rz::Error if the device
  // has no queues or more than kMaxQueues.
  VirtioPciDevice(std::unique_ptr<VirtioDevice> device, const memory::GuestMemory& mem,
                  EventLoop* loop = nullptr);
  // Unregisters the queue eventfds from the loop. Does not reset the device:
  // call reset_device() first while the loop still runs.
  ~VirtioPciDevice() override;

  VirtioDevice& device() { return *dev_; }
  uint16_t num_queues() const { return num_queues_; }
  uint64_t bar_size() const { return bar_size_; }
  // Offset in BAR 0 of queue `q`'s notification address.
  static uint64_t notify_offset(uint16_t q) { return kNotifyOffset + uint64_t{kNotifyOffMultiplier} * q; }
  // Queue `q`'s notification eventfd (for KVM_IOEVENTFD), or -1 without an
  // event loop.
  int queue_eventfd(uint16_t q) const;

  // Legacy INTx output: called with true when the ISR becomes non-zero (and
  // INTx is not disabled in the command register), false when it is cleared.
  void set_intx_handler(std::function<void(bool level)> handler);

  // What the guest would get by writing 0 to device_status: the device is
  // reset on the event loop (VirtioDevice::reset), queues and registers go
  // back to their initial state. Used when the machine stops or resets.
  void reset_device();

  // --- Inspection (tests, diagnostics) ---------------------------------------
  uint8_t device_status() const { return status_.load(); }
  uint64_t offered_features() const { return device_features_; }
  uint64_t negotiated_features() const;
  bool activated() const { return activated_flag_.load(); }
  uint16_t queue_vector(uint16_t q) const;
  uint16_t config_vector() const { return config_vector_.load(); }
  const Queue& queue(uint16_t q) const { return queues_.at(q); }
  std::shared_ptr<Interrupt> interrupt() const { return irq_; }
  uint8_t pci_cfg_cap_offset() const { return pci_cfg_cap_; }

 protected:
  void region_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override;
  void region_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) override;
  void config_written(pci::PciConfigSpace& config, uint16_t offset, unsigned size) override;

 private:
  class Irq;
  friend class Irq;

  void add_capabilities();
  void common_read(uint64_t offset, std::span<uint8_t> data);
  void common_write(uint64_t offset, std::span<const uint8_t> data);
  void write_status(uint8_t value);        // regs_mu_ held
  void reset_locked();                     // regs_mu_ held
  bool features_acceptable(uint64_t driver) const;
  // BAR access that bypasses PciDevice (used by the PCI_CFG window).
  void window_access(pci::PciConfigSpace& config, bool data_written);

  // Device-thread side.
  void run_on_loop(const std::function<void()>& fn);
  void kick(uint16_t q);          // any thread: a notification arrived
  void handle_kick(uint16_t q);   // loop thread
  void fail_device(const char* why);  // any thread: DEVICE_NEEDS_RESET

  // Interrupt delivery (any thread).
  void raise_queue(uint16_t q);
  void raise_config(bool bump_generation);
  void assert_isr(uint8_t bits);
  uint8_t read_clear_isr();
  void update_intx_locked();  // irq_mu_ held

  std::unique_ptr<VirtioDevice> dev_;
  const memory::GuestMemory& mem_;
  EventLoop* loop_;
  const uint16_t num_queues_;
  const uint16_t msix_vectors_;
  const uint64_t device_features_;
  uint64_t bar_size_ = 0;
  uint32_t notify_size_ = 0;
  uint32_t msix_table_offset_ = 0;
  uint32_t msix_pba_offset_ = 0;
  uint8_t pci_cfg_cap_ = 0;
  std::vector<Queue> queues_;
  std::vector<UniqueFd> kick_fds_;
  std::shared_ptr<Interrupt> irq_;

  // Registers (vCPU threads). regs_mu_ is never taken on the loop thread, so
  // holding it while waiting for the loop cannot deadlock.
  mutable std::mutex regs_mu_;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint64_t negotiated_ = 0;
  uint16_t queue_select_ = 0;
  std::atomic<uint8_t> status_{0};
  std::atomic<uint8_t> config_generation_{0};
  std::atomic<uint16_t> config_vector_{kMsiNoVector};
  std::unique_ptr<std::atomic<uint16_t>[]> queue_vectors_;

  // INTx state.
  std::mutex irq_mu_;
  uint8_t isr_ = 0;
  bool intx_level_ = false;
  bool intx_disabled_ = false;
  std::function<void(bool)> intx_;

  // Loop-thread state (or run_on_loop).
  bool activated_ = false;
  std::vector<bool> pending_kicks_;
  std::atomic<bool> activated_flag_{false};
};

}  // namespace rz::virtio
