#include "cli/options.h"

#include <cctype>
#include <limits>

#include "util/error.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/vsock.h"

namespace rz::cli {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Splits "--flag=value" and "--flag value" forms; advances i past the value.
bool take_value(const std::vector<std::string>& a, size_t& i, const std::string& flag, std::string* out) {
  const std::string& cur = a[i];
  if (cur == flag) {
    if (i + 1 >= a.size()) throw UsageError("flag " + flag + " needs a value");
    *out = a[++i];
    return true;
  }
  if (cur.rfind(flag + "=", 0) == 0) {
    *out = cur.substr(flag.size() + 1);
    return true;
  }
  return false;
}

}  // namespace

uint64_t parse_memory_size(const std::string& s, const std::string& flag) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 15) throw UsageError(flag + ": invalid size '" + s + "' (use e.g. 512M or 2G)");
  const uint64_t n = std::stoull(s.substr(0, i));
  const std::string suf = lower(s.substr(i));
  uint64_t mult;
  if (suf.empty() || suf == "m" || suf == "mib" || suf == "mb") mult = 1ULL << 20;
  else if (suf == "g" || suf == "gib" || suf == "gb") mult = 1ULL << 30;
  else if (suf == "k" || suf == "kib" || suf == "kb") mult = 1ULL << 10;
  else throw UsageError(flag + ": invalid size suffix in '" + s + "' (use M or G)");
  if (n == 0) throw UsageError(flag + ": size must be greater than 0");
  if (n > (std::numeric_limits<uint64_t>::max() >> 30)) throw UsageError(flag + ": size '" + s + "' is too large");
  const uint64_t bytes = n * mult;
  if (bytes % 4096) throw UsageError(flag + ": size '" + s + "' is not a multiple of 4 KiB");
  return bytes;
}

uint32_t parse_u32(const std::string& s, const std::string& flag) {
  if (s.empty() || s.size() > 10) throw UsageError(flag + ": invalid number '" + s + "'");
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) throw UsageError(flag + ": invalid number '" + s + "'");
  const uint64_t v = std::stoull(s);
  if (v > std::numeric_limits<uint32_t>::max()) throw UsageError(flag + ": number '" + s + "' is too large");
  return static_cast<uint32_t>(v);
}

NetOption parse_net_option(const std::string& spec) {
  NetOption n;
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t end = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, end - pos);
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == std::string::npos || value.empty()) throw UsageError("--net: expected key=value, got '" + item + "'");
    if (key == "tap") {
      if (value.size() >= 16) throw UsageError("--net: interface name '" + value + "' is longer than 15 bytes");
      n.tap = value;
    } else if (key == "mac") {
      const auto mac = virtio::parse_mac(value);
      if (!mac) throw UsageError("--net: invalid MAC address '" + value + "'");
      if ((*mac)[0] & 1) throw UsageError("--net: MAC address '" + value + "' is a multicast address");
      n.mac = value;
    } else {
      throw UsageError("--net: unknown key '" + key + "' (tap, mac)");
    }
    pos = end + 1;
  }
  if (n.tap.empty()) throw UsageError("--net: tap=NAME is required");
  return n;
}

Options parse(const std::vector<std::string>& a) {
  Options o;
  if (a.empty()) return o;
  size_t i = 0;
  const std::string& cmd = a[0];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    o.command = Command::Help;
    if (a.size() > 1) o.help_topic = a[1];
    return o;
  }
  if (cmd == "-V" || cmd == "--version" || cmd == "version") {
    o.command = Command::Version;
    return o;
  }
  if (cmd == "doctor") {
    o.command = Command::Doctor;
    for (i = 1; i < a.size(); ++i) {
      if (a[i] == "-h" || a[i] == "--help") {
        o.command = Command::Help;
        o.help_topic = "doctor";
        return o;
      }
      throw UsageError("unknown flag for doctor: " + a[i]);
    }
    return o;
  }
  if (cmd != "run") throw UsageError("unknown command '" + cmd + "' (try: ringzero --help)");

  o.command = Command::Run;
  RunOptions& r = o.run;
  bool have_kernel = false;
  for (i = 1; i < a.size(); ++i) {
    std::string v;
    if (a[i] == "-h" || a[i] == "--help") {
      o.command = Command::Help;
      o.help_topic = "run";
      return o;
    } else if (take_value(a, i, "--kernel", &v)) {
      if (v.empty()) throw UsageError("--kernel: empty path");
      r.kernel = v;
      have_kernel = true;
    } else if (take_value(a, i, "--initrd", &v)) {
      if (v.empty()) throw UsageError("--initrd: empty path");
      r.initrd = v;
    } else if (take_value(a, i, "--cmdline", &v)) {
      r.cmdline = v;
    } else if (take_value(a, i, "--cpus", &v)) {
      r.cpus = parse_u32(v, "--cpus");
      if (r.cpus == 0) throw UsageError("--cpus must be at least 1");
    } else if (take_value(a, i, "--memory", &v)) {
      r.memory = parse_memory_size(v);
    } else if (take_value(a, i, "--disk", &v)) {
      virtio::parse_blk_config(v);  // validates; throws UsageError
      r.disks.push_back(v);
    } else if (take_value(a, i, "--net", &v)) {
      r.nets.push_back(parse_net_option(v));
    } else if (a[i] == "--rng") {
      r.rng = true;
    } else if (take_value(a, i, "--vsock", &v)) {
      if (!r.vsock.empty()) throw UsageError("--vsock: only one vsock device is supported");
      virtio::parse_vsock_spec(v);
      r.vsock = v;
    } else if (take_value(a, i, "--log-level", &v)) {
      if (v != "error" && v != "warn" && v != "info" && v != "debug")
        throw UsageError("--log-level: unknown level '" + v + "' (error, warn, info, debug)");
      r.log_level = v;
    } else if (a[i].rfind("-", 0) == 0) {
      throw UsageError("unknown flag for run: " + a[i]);
    } else {
      throw UsageError("unexpected argument for run: " + a[i]);
    }
  }
  if (!have_kernel) throw UsageError("run: --kernel is required");
  return o;
}

std::string usage_text() {
  return "ringzero: a virtual machine monitor for Linux KVM\n"
         "\n"
         "usage: ringzero <command> [flags]\n"
         "\n"
         "commands:\n"
         "  run       boot a guest kernel (see: ringzero run --help)\n"
         "  doctor    report what this host's KVM can do\n"
         "  help      show this text, or `help run`\n"
         "  version   print the version\n"
         "\n"
         "exit status: 0 guest powered off or reset, 1 guest or VMM fault, 2 bad input,\n"
         "3 guest kernel panic, 130/143 stopped by SIGINT/SIGTERM\n";
}

std::string run_help_text() {
  return "usage: ringzero run --kernel PATH [flags]\n"
         "\n"
         "Boots a kernel with a serial console (COM1) on this terminal.\n"
         "\n"
         "flags:\n"
         "  --kernel PATH     bzImage (boot protocol 2.06+) or ELF vmlinux with a PVH note (required)\n"
         "  --initrd PATH     initial ramdisk\n"
         "  --cmdline STR     kernel command line, e.g. \"console=ttyS0\"\n"
         "  --cpus N          number of vCPUs (default 1)\n"
         "  --memory SIZE     guest RAM: MiB, or with an M/G suffix (default 512M)\n"
         "  --disk SPEC       virtio-blk disk (repeatable): path=FILE[,readonly=on]\n"
         "                    [,engine=sync|io_uring][,serial=ID][,queues=N]\n"
         "                    (queues: request queues, default one per vCPU)\n"
         "  --net SPEC        virtio-net on a TAP device (repeatable): tap=NAME[,mac=MAC]\n"
         "  --rng             virtio-rng fed from the host's getrandom()\n"
         "  --vsock SPEC      virtio-vsock: cid=N,socket=PATH (host side on a Unix socket:\n"
         "                    connect and send \"CONNECT <port>\\n\"; guest connections to\n"
         "                    port P reach PATH_P)\n"
         "  --log-level LVL   error, warn (default), info or debug (also: RZ_LOG)\n"
         "  -h, --help        show this text\n";
}

std::string doctor_help_text() {
  return "usage: ringzero doctor\n"
         "\n"
         "Reports the host's KVM: module, kind (hardware-assisted or software),\n"
         "capabilities, CPU features, and what will and will not work.\n";
}

}  // namespace rz::cli
