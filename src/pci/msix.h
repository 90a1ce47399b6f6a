// MSI-X: the capability in config space, the vector table and pending bit
// array (PBA) that live in a memory BAR, and the delivery rules (masking,
// pending bits, redelivery on unmask). KVM-free: interrupts leave through
// callbacks that the machine connects to irqfd / GSI routing.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

namespace rz::pci {

inline constexpr uint8_t kCapIdMsix = 0x11;
inline constexpr uint16_t kMsixMaxVectors = 2048;
inline constexpr uint16_t kMsixControlTableSizeMask = 0x07ff;  // N - 1
inline constexpr uint16_t kMsixControlFunctionMask = 1u << 14;
inline constexpr uint16_t kMsixControlEnable = 1u << 15;
inline constexpr uint32_t kMsixEntrySize = 16;
inline constexpr uint32_t kMsixVectorCtlMask = 1u << 0;

// What a vector writes when it fires: a 32-bit store of `data` to `address`.
struct MsiMessage {
  uint64_t address = 0;
  uint32_t data = 0;
  bool operator==(const MsiMessage&) const = default;
};

// The 12 bytes of an MSI-X capability plus its guest-writable bits (only
// the enable and function mask bits), ready for PciConfigSpace::add_capability.
struct MsixCapability {
  std::array<uint8_t, 12> bytes{};
  std::array<uint8_t, 12> writable{};
};
// `vectors` in 1..2048; BIRs 0..5; offsets 8-byte aligned. Throws rz::Error
// otherwise.
MsixCapability make_msix_capability(uint16_t vectors, uint8_t table_bir, uint32_t table_offset,
                                    uint8_t pba_bir, uint32_t pba_offset);
// Offset of the Message Control word inside the capability.
inline constexpr uint16_t kMsixCapControl = 2;

// The table and PBA of one function. Thread-safe: the guest (vCPU threads)
// and device back-ends (notify) may call in concurrently. Both callbacks run
// with the table's lock held, which keeps deliveries and route updates in
// order; they must not call back into this MsixTable.
class MsixTable {
 public:
  // Fires one interrupt with the vector's current message.
  using DeliverFn = std::function<void(uint16_t vector, const MsiMessage& msg)>;
  // A vector's message or effective mask changed; `masked` is true unless
  // MSI-X is enabled, the function is unmasked and the vector is unmasked.
  using RouteFn = std::function<void(uint16_t vector, const MsiMessage& msg, bool masked)>;

  // `vectors` in 1..2048, else rz::Error. All vectors start masked, MSI-X
  // disabled, function unmasked (the reset state).
  explicit MsixTable(uint16_t vectors);

  uint16_t vectors() const { return static_cast<uint16_t>(entries_.size()); }
  uint32_t table_bytes() const { return vectors() * kMsixEntrySize; }
  uint32_t pba_bytes() const { return static_cast<uint32_t>(pba_.size() * 8); }

  void set_deliver(DeliverFn fn);
  void set_route_handler(RouteFn fn);

  // Guest accesses to the table / PBA, `offset` relative to their start.
  // Only naturally aligned 4- and 8-byte accesses inside bounds are
  // honoured; other reads fill all-ones, other writes are ignored. The PBA
  // is read-only.
  void table_read(uint64_t offset, std::span<uint8_t> data) const;
  void table_write(uint64_t offset, std::span<const uint8_t> data);
  void pba_read(uint64_t offset, std::span<uint8_t> data) const;
  void pba_write(uint64_t offset, std::span<const uint8_t> data);

  // The Message Control word as the guest wrote it (only bits 14 and 15
  // matter). Clearing the function mask or setting enable delivers pending
  // vectors that are no longer masked.
  void set_message_control(uint16_t control);
  bool enabled() const;
  bool function_masked() const;

  // A device raises `vector`: delivered now if MSI-X is enabled and neither
  // the function nor the vector is masked, otherwise its pending bit is set.
  // Out-of-range vectors (e.g. virtio's NO_VECTOR 0xffff) are ignored.
  void notify(uint16_t vector);

  // Inspection (tests, snapshot, machine wiring). Out-of-range: defaults.
  MsiMessage message(uint16_t vector) const;
  bool vector_masked(uint16_t vector) const;
  bool pending(uint16_t vector) const;

 private:
  struct Entry {
    uint32_t addr_lo = 0;
    uint32_t addr_hi = 0;
    uint32_t data = 0;
    uint32_t control = kMsixVectorCtlMask;
  };
  static MsiMessage message_of(const Entry& e);
  bool effectively_masked(uint16_t vector) const;  // lock held
  void set_pending(uint16_t vector, bool on);
  bool pending_locked(uint16_t vector) const;

  mutable std::mutex mu_;
  std::vector<Entry> entries_;
  std::vector<uint64_t> pba_;
  bool enabled_ = false;
  bool function_masked_ = false;
  DeliverFn deliver_;
  RouteFn route_;
};

}  // namespace rz::pci
