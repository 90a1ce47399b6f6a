// The configuration space of one PCI function with a type-0 header: the
// register bytes plus, per bit, what a guest may change. Guest writes go
// through the masks, so read-only fields stay read-only, write-1-to-clear
// status bits clear, and BAR sizing (write all-ones, read back) falls out of
// the BAR's writable mask without special cases.
//
// Not synchronized: the owner (PciDevice) serializes access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace rz::pci {

// Offsets and bits of the type-0 header.
inline constexpr uint16_t kCfgVendorId = 0x00;
inline constexpr uint16_t kCfgDeviceId = 0x02;
inline constexpr uint16_t kCfgCommand = 0x04;
inline constexpr uint16_t kCfgStatus = 0x06;
inline constexpr uint16_t kCfgRevision = 0x08;
inline constexpr uint16_t kCfgClassCode = 0x09;  // 3 bytes: prog-if, subclass, class
inline constexpr uint16_t kCfgCacheLineSize = 0x0c;
inline constexpr uint16_t kCfgHeaderType = 0x0e;
inline constexpr uint16_t kCfgBar0 = 0x10;
inline constexpr uint16_t kCfgSubsystemVendorId = 0x2c;
inline constexpr uint16_t kCfgSubsystemId = 0x2e;
inline constexpr uint16_t kCfgRomBar = 0x30;
inline constexpr uint16_t kCfgCapabilityPtr = 0x34;
inline constexpr uint16_t kCfgInterruptLine = 0x3c;
inline constexpr uint16_t kCfgInterruptPin = 0x3d;
inline constexpr uint16_t kCfgCapabilitiesStart = 0x40;

inline constexpr uint16_t kCommandIo = 1u << 0;
inline constexpr uint16_t kCommandMemory = 1u << 1;
inline constexpr uint16_t kCommandBusMaster = 1u << 2;
inline constexpr uint16_t kCommandParityErrorResponse = 1u << 6;
inline constexpr uint16_t kCommandSerr = 1u << 8;
inline constexpr uint16_t kCommandIntxDisable = 1u << 10;

inline constexpr uint16_t kStatusInterrupt = 1u << 3;
inline constexpr uint16_t kStatusCapabilityList = 1u << 4;
// Error bits the guest clears by writing 1 (write-1-to-clear).
inline constexpr uint16_t kStatusW1cBits = 0xf900;

inline constexpr unsigned kNumBars = 6;

enum class BarType : uint8_t { Io, Mem32, Mem64 };

// One base address register (a 64-bit BAR occupies `index` and `index + 1`).
struct BarInfo {
  uint8_t index = 0;
  BarType type = BarType::Mem32;
  bool prefetchable = false;
  uint64_t size = 0;     // power of two
  uint64_t address = 0;  // as currently programmed (flag bits stripped)
  // True when the guest has enabled decoding for this BAR's space and the
  // address is a usable one (not 0, not a sizing pattern, no wrap-around).
  bool mapped = false;
  bool operator==(const BarInfo&) const = default;
};

// The fixed identity of a function.
struct PciHeader {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint32_t class_code = 0;  // 24 bits: base class << 16 | subclass << 8 | prog-if
  uint8_t revision = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint8_t interrupt_pin = 0;  // 0 = none, 1 = INTA# .. 4 = INTD#
};

class PciConfigSpace {
 public:
  static constexpr size_t kSize = 256;
  static constexpr size_t kExtendedSize = 4096;

  // `extended` gives the 4 KiB PCI Express space (the part above 256 bytes
  // reads as zero, i.e. no extended capabilities); otherwise accesses above
  // 256 bytes read all-ones. Throws rz::Error on an invalid interrupt pin.
  explicit PciConfigSpace(const PciHeader& header, bool extended = false);

  size_t size() const { return bytes_.size(); }

  // Guest accesses. `size` is 1, 2 or 4 and `offset` a multiple of it inside
  // the space; anything else reads all-ones (0xffffffff) / is ignored.
  uint32_t read(uint16_t offset, unsigned size) const;
  void write(uint16_t offset, unsigned size, uint32_t value);

  // Device-side access: sets bytes regardless of the guest masks (e.g. to
  // raise a status bit). Same validity rules as read/write; throws rz::Error
  // on an invalid offset/size since that is a VMM bug.
  void poke(uint16_t offset, unsigned size, uint32_t value);

  uint16_t command() const { return static_cast<uint16_t>(read(kCfgCommand, 2)); }
  uint16_t status() const { return static_cast<uint16_t>(read(kCfgStatus, 2)); }
  bool io_enabled() const { return command() & kCommandIo; }
  bool memory_enabled() const { return command() & kCommandMemory; }
  bool bus_master_enabled() const { return command() & kCommandBusMaster; }
  bool intx_disabled() const { return command() & kCommandIntxDisable; }
  // Status bit 3, which a device sets while it asserts INTx.
  void set_interrupt_status(bool asserted);

  uint8_t interrupt_pin() const { return bytes_[kCfgInterruptPin]; }
  uint8_t interrupt_line() const { return bytes_[kCfgInterruptLine]; }
  void set_interrupt_line(uint8_t line) { bytes_[kCfgInterruptLine] = line; }

  // Declares BAR `index`. `size` must be a power of two: memory BARs at least
  // 16 bytes (at most 2 GiB for 32-bit ones), I/O BARs 4..256 bytes. A Mem64
  // BAR also takes index + 1. Throws rz::Error on any misuse (index in use or
  // out of range, bad size, prefetchable I/O).
  void add_bar(uint8_t index, BarType type, uint64_t size, bool prefetchable = false);
  // Programs a BAR's address (host side, e.g. from BarAllocator). The address
  // must be aligned to the BAR size and fit its type; throws rz::Error if not.
  void set_bar_address(uint8_t index, uint64_t address);
  // The BAR declared at `index` (the first index of a 64-bit BAR), if any.
  std::optional<BarInfo> bar(uint8_t index) const;
  std::vector<BarInfo> bars() const;

  // Appends a capability. `body` starts with the capability id; its second
  // byte (the next pointer) is managed here. `writable` (same length as
  // `body`, or empty for a read-only capability) gives the guest-writable
  // bits of each byte; the id and next bytes are always read-only. Placed
  // dword-aligned from 0x40 on; returns its offset. Throws rz::Error if the
  // body is shorter than 2 bytes, the masks differ in length, or it does not
  // fit below 0x100.
  uint8_t add_capability(std::span<const uint8_t> body, std::span<const uint8_t> writable = {});
  // Walks the list from 0x34 like a guest would (bounded, so a corrupt list
  // cannot loop); returns the offset of the first capability with `id`.
  std::optional<uint8_t> find_capability(uint8_t id) const;

 private:
  struct Bar {
    bool present = false;
    bool upper_half = false;  // the high dword of the 64-bit BAR before it
    BarType type = BarType::Mem32;
    bool prefetchable = false;
    uint64_t size = 0;
  };
  static bool valid_access(size_t space, uint16_t offset, unsigned size);
  uint32_t raw32(uint16_t offset) const;
  void set_raw32(uint16_t offset, uint32_t value);
  void set_mask32(std::vector<uint8_t>& mask, uint16_t offset, uint32_t value);
  uint64_t bar_address(uint8_t index) const;
  bool bar_mapped(uint8_t index, uint64_t address) const;

  std::vector<uint8_t> bytes_;
  std::vector<uint8_t> writable_;  // bits the guest may set or clear
  std::vector<uint8_t> w1c_;       // bits the guest clears by writing 1
  Bar bars_[kNumBars];
  uint8_t last_capability_ = 0;  // offset of the tail of the list, 0 = none
  uint16_t next_capability_ = kCfgCapabilitiesStart;
};

}  // namespace rz::pci
