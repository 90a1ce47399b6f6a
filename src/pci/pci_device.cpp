#include "pci/pci_device.h"

#include <algorithm>

#include "util/error.h"

namespace rz::pci {
namespace {

bool inside(uint64_t offset, size_t len, uint64_t start, uint64_t size) {
  return offset >= start && offset - start < size && len <= size - (offset - start);
}

std::optional<uint64_t> decoded_at(const BarInfo& b) {
  return b.mapped ? std::optional<uint64_t>(b.address) : std::nullopt;
}

}  // namespace

PciDevice::PciDevice(PciConfigSpace config) : config_(std::move(config)) {}

uint32_t PciDevice::config_read(uint16_t offset, unsigned size) const {
  std::lock_guard lock(mu_);
  return config_.read(offset, size);
}

void PciDevice::config_write(uint16_t offset, unsigned size, uint32_t value) {
  std::lock_guard lock(mu_);
  const std::vector<BarInfo> before = config_.bars();
  config_.write(offset, size, value);
  if (msix_) {
    const uint32_t ctl = msix_cap_ + kMsixCapControl;
    if (offset < ctl + 2 && ctl < offset + size)
      msix_->set_message_control(static_cast<uint16_t>(config_.read(ctl, 2)));
  }
  config_written(config_, offset, size);
  report_moves(before);
}

void PciDevice::report_moves(const std::vector<BarInfo>& before) {
  if (!on_move_) return;
  for (const BarInfo& now : config_.bars()) {
    auto it = std::find_if(before.begin(), before.end(),
                           [&](const BarInfo& b) { return b.index == now.index; });
    const std::optional<uint64_t> old_at = it == before.end() ? std::nullopt : decoded_at(*it);
    const std::optional<uint64_t> new_at = decoded_at(now);
    if (old_at == new_at) continue;
    on_move_(BarMove{now.index, now.type, now.size, old_at, new_at});
  }
}

void PciDevice::bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) {
  std::optional<BarInfo> info;
  {
    std::lock_guard lock(mu_);
    info = config_.bar(bar);
  }
  if (!info || !inside(offset, data.size(), 0, info->size)) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  if (msix_ && bar == msix_bar_) {
    if (inside(offset, data.size(), msix_table_offset_, msix_->table_bytes()))
      return msix_->table_read(offset - msix_table_offset_, data);
    if (inside(offset, data.size(), msix_pba_offset_, msix_->pba_bytes()))
      return msix_->pba_read(offset - msix_pba_offset_, data);
  }
  region_read(bar, offset, data);
}

void PciDevice::bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) {
  std::optional<BarInfo> info;
  {
    std::lock_guard lock(mu_);
    info = config_.bar(bar);
  }
  if (!info || !inside(offset, data.size(), 0, info->size)) return;
  if (msix_ && bar == msix_bar_) {
    if (inside(offset, data.size(), msix_table_offset_, msix_->table_bytes()))
      return msix_->table_write(offset - msix_table_offset_, data);
    if (inside(offset, data.size(), msix_pba_offset_, msix_->pba_bytes()))
      return msix_->pba_write(offset - msix_pba_offset_, data);
  }
  region_write(bar, offset, data);
}

std::vector<BarInfo> PciDevice::bars() const {
  std::lock_guard lock(mu_);
  return config_.bars();
}

void PciDevice::set_bar_address(uint8_t bar, uint64_t address) {
  std::lock_guard lock(mu_);
  const std::vector<BarInfo> before = config_.bars();
  config_.set_bar_address(bar, address);
  report_moves(before);
}

void PciDevice::set_bar_move_handler(BarMoveHandler handler) {
  std::lock_guard lock(mu_);
  on_move_ = std::move(handler);
  if (!on_move_) return;
  for (const BarInfo& b : config_.bars())
    if (b.mapped) on_move_(BarMove{b.index, b.type, b.size, std::nullopt, b.address});
}

uint8_t PciDevice::interrupt_pin() const {
  std::lock_guard lock(mu_);
  return config_.interrupt_pin();
}

uint8_t PciDevice::interrupt_line() const {
  std::lock_guard lock(mu_);
  return config_.interrupt_line();
}

void PciDevice::set_interrupt_line(uint8_t line) {
  std::lock_guard lock(mu_);
  config_.set_interrupt_line(line);
}

bool PciDevice::memory_enabled() const {
  std::lock_guard lock(mu_);
  return config_.memory_enabled();
}

bool PciDevice::io_enabled() const {
  std::lock_guard lock(mu_);
  return config_.io_enabled();
}

bool PciDevice::bus_master_enabled() const {
  std::lock_guard lock(mu_);
  return config_.bus_master_enabled();
}

std::shared_ptr<MsixTable> PciDevice::add_msix(uint16_t vectors, uint8_t bar,
                                               uint32_t table_offset, uint32_t pba_offset) {
  std::lock_guard lock(mu_);
  if (msix_) throw Error("pci: device already has MSI-X");
  const std::optional<BarInfo> info = config_.bar(bar);
  if (!info || info->type == BarType::Io) throw Error("pci: MSI-X needs a declared memory BAR");
  auto table = std::make_shared<MsixTable>(vectors);
  const uint64_t table_end = uint64_t{table_offset} + table->table_bytes();
  const uint64_t pba_end = uint64_t{pba_offset} + table->pba_bytes();
  if (table_end > info->size || pba_end > info->size)
    throw Error("pci: MSI-X table or PBA does not fit in its BAR");
  if (table_offset < pba_end && pba_offset < table_end)
    throw Error("pci: MSI-X table and PBA overlap");
  const MsixCapability cap = make_msix_capability(vectors, bar, table_offset, bar, pba_offset);
  msix_cap_ = config_.add_capability(cap.bytes, cap.writable);
  msix_ = std::move(table);
  msix_bar_ = bar;
  msix_table_offset_ = table_offset;
  msix_pba_offset_ = pba_offset;
  return msix_;
}

void PciDevice::region_read(uint8_t, uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
}

void PciDevice::region_write(uint8_t, uint64_t, std::span<const uint8_t>) {}

void PciDevice::config_written(PciConfigSpace&, uint16_t, unsigned) {}

}  // namespace rz::pci
