// A PCI function as the host bridge and the machine see it: config space
// accesses, accesses to the regions behind its BARs, and a hook that reports
// where the guest has placed (or stopped decoding) each BAR so the owner can
// keep the MMIO / PIO buses in step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "pci/config_space.h"
#include "pci/msix.h"

namespace rz::pci {

// A BAR started or stopped being decoded, or moved. An address is present
// while the guest has the BAR's space (memory / I/O) enabled in the command
// register and the BAR holds a usable address (see BarInfo::mapped).
struct BarMove {
  uint8_t index = 0;
  BarType type = BarType::Mem32;
  uint64_t size = 0;
  std::optional<uint64_t> old_address;  // where it was decoded before, if anywhere
  std::optional<uint64_t> new_address;  // where it is decoded now, if anywhere
  bool operator==(const BarMove&) const = default;
};
using BarMoveHandler = std::function<void(const BarMove&)>;

class PciDevice {
 public:
  explicit PciDevice(PciConfigSpace config);
  virtual ~PciDevice() = default;
  PciDevice(const PciDevice&) = delete;
  PciDevice& operator=(const PciDevice&) = delete;

  // --- Guest side (vCPU threads, concurrently) -----------------------------
  // Config space: `size` 1, 2 or 4 at an offset that is a multiple of it;
  // other accesses read all-ones / are ignored.
  uint32_t config_read(uint16_t offset, unsigned size) const;
  void config_write(uint16_t offset, unsigned size, uint32_t value);
  // Region behind BAR `bar`, `offset` relative to its start. Accesses to an
  // undeclared BAR or past its end read all-ones / are ignored. The MSI-X
  // table and PBA (if any) are served here; the rest goes to region_read /
  // region_write.
  void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data);
  void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data);

  // --- Machine side ---------------------------------------------------------
  std::vector<BarInfo> bars() const;
  // Programs a BAR (e.g. from BarAllocator); reports a move if it is decoded.
  void set_bar_address(uint8_t bar, uint64_t address);
  // Called, with the device's config lock held, after every config write or
  // set_bar_address that changes where a BAR is decoded. Installing a handler
  // first reports every BAR that is already decoded (old_address empty). The
  // handler must not call back into this device.
  void set_bar_move_handler(BarMoveHandler handler);

  uint8_t interrupt_pin() const;   // 0 = none, 1 = INTA# .. 4 = INTD#
  uint8_t interrupt_line() const;
  void set_interrupt_line(uint8_t line);
  bool memory_enabled() const;
  bool io_enabled() const;
  bool bus_master_enabled() const;

  // The MSI-X table, or null if the device has none.
  const std::shared_ptr<MsixTable>& msix() const { return msix_; }

  // Runs f(PciConfigSpace&) under the config lock: device-side changes
  // (status bits, capabilities at setup). Bypasses the guest masks and
  // reports no BAR moves.
  template <class F>
  decltype(auto) with_config(F&& f) {
    std::lock_guard lock(mu_);
    return std::forward<F>(f)(config_);
  }
  template <class F>
  decltype(auto) with_config(F&& f) const {
    std::lock_guard lock(mu_);
    return std::forward<F>(f)(std::as_const(config_));
  }

 protected:
  // Gives the device an MSI-X capability with `vectors` vectors whose table
  // and PBA sit at the given offsets of memory BAR `bar` (declared already,
  // large enough, regions not overlapping). Throws rz::Error otherwise, or if
  // called twice. Call it while setting the device up.
  std::shared_ptr<MsixTable> add_msix(uint16_t vectors, uint8_t bar, uint32_t table_offset,
                                      uint32_t pba_offset);

  // The device's own registers. Bounds are checked before these are called;
  // the defaults read all-ones and ignore writes. Not called with any lock
  // held: devices synchronize themselves.
  virtual void region_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data);
  virtual void region_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data);

  // After a guest config write has been applied, with the config lock held;
  // for devices with registers of their own in config space.
  virtual void config_written(PciConfigSpace& config, uint16_t offset, unsigned size);

 private:
  void report_moves(const std::vector<BarInfo>& before);  // lock held

  mutable std::mutex mu_;
  PciConfigSpace config_;
  BarMoveHandler on_move_;
  std::shared_ptr<MsixTable> msix_;
  uint8_t msix_cap_ = 0;
  uint8_t msix_bar_ = 0;
  uint32_t msix_table_offset_ = 0;
  uint32_t msix_pba_offset_ = 0;
};

}  // namespace rz::pci
