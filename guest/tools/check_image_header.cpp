// Host-side check of the test guest's bzImage: the Linux boot protocol setup
// header must say what a loader needs to boot the 64-bit entry point.
//
// Usage: rz_guest_header_check <image>; exit status 0 when every check holds.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

class Image {
 public:
  explicit Image(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  size_t size() const { return bytes_.size(); }
  // Little-endian field of `width` bytes at `off`; 0 past the end (the size
  // check reports that case).
  uint64_t field(size_t off, size_t width) const {
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++) {
      if (off + i < bytes_.size()) v |= uint64_t{bytes_[off + i]} << (8 * i);
    }
    return v;
  }
  uint8_t byte(size_t off) const { return static_cast<uint8_t>(field(off, 1)); }

 private:
  std::vector<uint8_t> bytes_;
};

class Checker {
 public:
  void expect(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) failures_++;
  }
  int failures() const { return failures_; }

 private:
  int failures_ = 0;
};

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <bzImage>\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", argv[1]);
    return 2;
  }
  Image img(std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}));
  Checker c;

  c.expect(img.size() >= 1024, "file is at least 1024 bytes (" + std::to_string(img.size()) + ")");
  c.expect(img.field(0x1fe, 2) == 0xaa55, "boot_flag 0xAA55 at 0x1FE (" + hex(img.field(0x1fe, 2)) + ")");
  c.expect(img.field(0x202, 4) == 0x53726448, "\"HdrS\" at 0x202");
  uint64_t version = img.field(0x206, 2);
  c.expect(version >= 0x0206, "protocol version >= 0x0206 (" + hex(version) + ")");
  c.expect(img.byte(0x200) == 0xeb, "short jump at 0x200");
  uint64_t header_end = 0x202 + static_cast<int8_t>(img.byte(0x201));
  c.expect(header_end >= 0x268, "jump target " + hex(header_end) + " lies past the 2.12 header fields");

  uint64_t setup_sects = img.byte(0x1f1);
  if (setup_sects == 0) setup_sects = 4;
  uint64_t setup_bytes = (setup_sects + 1) * 512;
  c.expect(setup_bytes < img.size(), "setup_sects " + std::to_string(setup_sects) +
                                         ": protected-mode part starts inside the file at " + hex(setup_bytes));
  c.expect(header_end <= setup_bytes, "header lies inside the setup sectors");
  uint64_t pm_size = img.size() > setup_bytes ? img.size() - setup_bytes : 0;
  uint64_t syssize = img.field(0x1f4, 4);
  c.expect(syssize * 16 >= pm_size && syssize * 16 < pm_size + 16,
           "syssize " + hex(syssize) + " paragraphs matches the protected-mode size " + hex(pm_size));

  c.expect(img.byte(0x211) & 0x01, "loadflags has LOADED_HIGH");
  c.expect(img.field(0x236, 2) & 0x0001, "xloadflags has XLF_KERNEL_64");
  c.expect(pm_size > 0x200 && img.field(setup_bytes + 0x200, 4) != 0,
           "64-bit entry at protected-mode offset 0x200 holds code");
  uint64_t pref = img.field(0x258, 8);
  uint64_t code32 = img.field(0x214, 4);
  uint64_t align = img.field(0x230, 4);
  c.expect(pref >= 0x100000, "pref_address " + hex(pref) + " is at or above 1 MiB");
  c.expect(code32 == pref, "code32_start " + hex(code32) + " equals pref_address");
  c.expect(align != 0 && (align & (align - 1)) == 0 && pref % align == 0,
           "kernel_alignment " + hex(align) + " is a power of two that pref_address honours");
  c.expect(img.byte(0x234) == 0, "not relocatable (linked at pref_address)");
  uint64_t init_size = img.field(0x260, 4);
  c.expect(init_size >= pm_size, "init_size " + hex(init_size) + " covers the protected-mode part");
  c.expect(init_size <= 16 * 1024 * 1024, "init_size is small (under 16 MiB)");
  uint64_t cmdline_size = img.field(0x238, 4);
  c.expect(cmdline_size >= 255, "cmdline_size " + std::to_string(cmdline_size) + " >= 255");
  c.expect(img.field(0x228, 4) == 0 && img.byte(0x210) == 0,
           "loader-written fields (cmd_line_ptr, type_of_loader) are 0 in the file");

  if (c.failures() != 0) {
    std::printf("%d check(s) failed\n", c.failures());
    return 1;
  }
  std::printf("all header checks passed\n");
  return 0;
}
