#include "boot/kernel_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <elf.h>

#include "util/error.h"
#include "util/fd.h"
#include "x86/layout.h"

namespace rz::boot {

namespace {

template <typename T>
T get(const std::vector<uint8_t>& b, size_t off) {
  T v{};
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

std::string hex(uint64_t v) {
  char s[24];
  std::snprintf(s, sizeof s, "%#llx", static_cast<unsigned long long>(v));
  return s;
}

// Setup header offsets (Documentation/arch/x86/boot.rst).
constexpr size_t kSetupSects = 0x1f1;
constexpr size_t kBootFlag = 0x1fe;
constexpr size_t kHeaderEndByte = 0x201;
constexpr size_t kHeaderMagic = 0x202;
constexpr size_t kVersion = 0x206;
constexpr size_t kLoadflags = 0x211;
constexpr size_t kCode32Start = 0x214;
constexpr size_t kInitrdAddrMax = 0x22c;
constexpr size_t kKernelAlignment = 0x230;
constexpr size_t kRelocatable = 0x234;
constexpr size_t kXloadflags = 0x236;
constexpr size_t kCmdlineSize = 0x238;
constexpr size_t kPrefAddress = 0x258;
constexpr size_t kInitSize = 0x260;
constexpr uint8_t kLoadedHigh = 0x01;
constexpr uint16_t kXlfKernel64 = 0x01;

}  // namespace

void check_readable(const std::string& path, const std::string& what) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw UsageError(errno_message(what + " " + path, errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) throw UsageError(errno_message(what + " " + path, errno));
  if (!S_ISREG(st.st_mode)) throw UsageError(what + " " + path + ": not a regular file");
}

std::vector<uint8_t> read_file(const std::string& path, const std::string& what, uint64_t max_size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw UsageError(errno_message(what + " " + path, errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) throw UsageError(errno_message(what + " " + path, errno));
  if (!S_ISREG(st.st_mode)) throw UsageError(what + " " + path + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_size)
    throw UsageError(what + " " + path + ": file too large (" + std::to_string(st.st_size >> 20) + " MiB)");
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw UsageError(errno_message(what + " " + path, errno));
    if (n == 0) throw UsageError(what + " " + path + ": file shrank while reading");
    done += static_cast<size_t>(n);
  }
  return data;
}

LoadedKernel load_bzimage(const memory::GuestMemory& mem, const std::vector<uint8_t>& img) {
  if (img.size() < 0x400 || get<uint16_t>(img, kBootFlag) != 0xaa55 ||
      std::memcmp(img.data() + kHeaderMagic, "HdrS", 4) != 0)
    throw UsageError("kernel is not a bzImage (no boot sector flag or HdrS signature)");
  LoadedKernel k;
  k.protocol = get<uint16_t>(img, kVersion);
  if (k.protocol < 0x206) {
    char v[16];
    std::snprintf(v, sizeof v, "%u.%02u", k.protocol >> 8, k.protocol & 0xff);
    throw UsageError(std::string("kernel boot protocol ") + v + " is too old (2.06 or newer needed)");
  }
  if (!(img[kLoadflags] & kLoadedHigh))
    throw UsageError("kernel is a zImage (not loaded high): only bzImage is supported");
  const size_t header_end = 0x202 + img[kHeaderEndByte];
  if (header_end > img.size() || header_end <= kSetupSects)
    throw UsageError("kernel setup header is truncated");
  unsigned setup_sects = img[kSetupSects];
  if (setup_sects == 0) setup_sects = 4;
  const size_t setup_size = (setup_sects + 1) * 512ULL;
  if (setup_size >= img.size()) throw UsageError("kernel image is truncated (no protected-mode code)");
  const size_t payload = img.size() - setup_size;

  const bool relocatable = k.protocol >= 0x205 && img[kRelocatable];
  const uint64_t pref = k.protocol >= 0x20a ? get<uint64_t>(img, kPrefAddress) : 0;
  uint64_t load = relocatable && pref ? pref : get<uint32_t>(img, kCode32Start);
  if (load == 0) load = x86::kHighMemStart;
  uint64_t init_size = k.protocol >= 0x20a ? get<uint32_t>(img, kInitSize) : 0;
  if (init_size < payload) init_size = payload;
  (void)kKernelAlignment;

  if (!mem.contains(load, init_size) || load + init_size > x86::kMmioHoleStart)
    throw UsageError("not enough guest memory for the kernel: it needs " +
                     std::to_string((load + init_size) >> 20) + " MiB below " + hex(load + init_size));
  if (!mem.write(load, img.data() + setup_size, payload))
    throw UsageError("kernel does not fit in guest memory");

  const bool has64 = k.protocol >= 0x20c && (get<uint16_t>(img, kXloadflags) & kXlfKernel64);
  k.mode = has64 ? EntryMode::Linux64 : EntryMode::Linux32;
  k.load_addr = load;
  k.load_end = load + init_size;
  k.entry = has64 ? load + 0x200 : load;
  k.setup_header.assign(img.begin() + kSetupSects, img.begin() + static_cast<long>(header_end));
  k.initrd_addr_max = k.protocol >= 0x203 ? get<uint32_t>(img, kInitrdAddrMax) : 0x37ffffff;
  k.cmdline_size = k.protocol >= 0x206 ? get<uint32_t>(img, kCmdlineSize) : 255;
  return k;
}

LoadedKernel load_elf_pvh(const memory::GuestMemory& mem, const std::vector<uint8_t>& img) {
  if (img.size() < sizeof(Elf64_Ehdr)) throw UsageError("kernel ELF image is truncated");
  const auto eh = get<Elf64_Ehdr>(img, 0);
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
      eh.e_machine != EM_X86_64)
    throw UsageError("kernel ELF image is not a little-endian x86-64 ELF64 file");
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 256 ||
      eh.e_phoff > img.size() || eh.e_phnum * sizeof(Elf64_Phdr) > img.size() - eh.e_phoff)
    throw UsageError("kernel ELF image has a corrupt program header table");

  LoadedKernel k;
  k.mode = EntryMode::Pvh32;
  k.load_addr = UINT64_MAX;
  bool have_entry = false;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    const auto ph = get<Elf64_Phdr>(img, eh.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_offset > img.size() || ph.p_filesz > img.size() - ph.p_offset)
      throw UsageError("kernel ELF segment " + std::to_string(i) + " lies outside the file");
    if (ph.p_type == PT_LOAD) {
      if (ph.p_filesz > ph.p_memsz || !mem.contains(ph.p_paddr, ph.p_memsz) ||
          ph.p_paddr + ph.p_memsz > x86::kMmioHoleStart)
        throw UsageError("kernel ELF segment at " + hex(ph.p_paddr) + " does not fit in guest memory");
      mem.write(ph.p_paddr, img.data() + ph.p_offset, ph.p_filesz);
      auto s = mem.slice(ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz);
      if (s) std::memset(s->data(), 0, s->size());
      k.load_addr = std::min<uint64_t>(k.load_addr, ph.p_paddr);
      k.load_end = std::max<uint64_t>(k.load_end, ph.p_paddr + ph.p_memsz);
    } else if (ph.p_type == PT_NOTE) {
      // Walk the notes looking for Xen's XEN_ELFNOTE_PHYS32_ENTRY (18).
      size_t off = ph.p_offset;
      const size_t end = ph.p_offset + ph.p_filesz;
      for (int guard = 0; guard < 1024 && end - off >= sizeof(Elf64_Nhdr); ++guard) {
        const auto nh = get<Elf64_Nhdr>(img, off);
        const size_t name_sz = (nh.n_namesz + 3ULL) & ~3ULL;
        const size_t desc_sz = (nh.n_descsz + 3ULL) & ~3ULL;
        const size_t name_off = off + sizeof(Elf64_Nhdr);
        if (name_sz > end - name_off || desc_sz > end - name_off - name_sz) break;
        const size_t desc_off = name_off + name_sz;
        if (nh.n_type == 18 && nh.n_namesz == 4 && std::memcmp(img.data() + name_off, "Xen", 4) == 0 &&
            nh.n_descsz >= 4) {
          k.entry = nh.n_descsz >= 8 ? get<uint64_t>(img, desc_off) : get<uint32_t>(img, desc_off);
          have_entry = true;
        }
        off = desc_off + desc_sz;
      }
    }
  }
  if (k.load_addr == UINT64_MAX) throw UsageError("kernel ELF image has no loadable segment");
  if (!have_entry)
    throw UsageError("kernel ELF image has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note)");
  if (k.entry >= x86::kMmioHoleStart) throw UsageError("kernel PVH entry point is above 3 GiB");
  return k;
}

LoadedKernel load_kernel(const memory::GuestMemory& mem, const std::vector<uint8_t>& img) {
  if (img.size() >= 4 && std::memcmp(img.data(), ELFMAG, SELFMAG) == 0) return load_elf_pvh(mem, img);
  if (img.size() >= 0x206 && get<uint16_t>(img, kBootFlag) == 0xaa55) return load_bzimage(mem, img);
  throw UsageError("kernel image format not recognised (expected a bzImage or an ELF vmlinux with a PVH note)");
}

}  // namespace rz::boot
