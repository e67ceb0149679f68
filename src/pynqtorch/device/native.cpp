// The zynq device's runtime hooks in C++: the parts of a PyTorch backend that PyTorch only asks of C++.
//
// * PrivateUse1 hooks with a pinned-memory allocator (`pin_memory()`, `DataLoader(pin_memory=True)`,
//   `to("cpu", non_blocking=True)`): zynq memory is host memory, so "pinned" host memory is page-locked
//   CPU memory (mlock), tracked so `is_pinned()` answers for any pointer inside a pinned block.
// * A device guard with streams and events: every engine call is synchronous, so streams are labels,
//   synchronizing returns at once, and an event records the host time it was reached.
// * A device allocator for `torch.accelerator.memory_*`: its statistics come from the Python host
//   allocator (`device/allocator.py`) through a callback; zynq storages themselves are created by the
//   Python tensor kernels, so a direct storage allocation is refused with an explanation.
//
// Loaded with ctypes; `pynqtorch_install` registers everything once.

#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>

namespace {

constexpr c10::DeviceType kZynq = c10::DeviceType::PrivateUse1;

// ---- pinned host memory -------------------------------------------------------------------------

class PinnedAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    void* p = c10::GetCPUAllocator()->raw_allocate(nbytes ? nbytes : 1);
    bool locked = mlock(p, nbytes) == 0;  // best effort: RLIMIT_MEMLOCK may forbid it
    {
      std::lock_guard<std::mutex> g(mu_);
      blocks_[reinterpret_cast<uintptr_t>(p)] = Block{nbytes ? nbytes : 1, locked};
    }
    return {p, p, &PinnedAllocator::free, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &PinnedAllocator::free; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  bool contains(const void* ptr) {
    auto a = reinterpret_cast<uintptr_t>(ptr);
    std::lock_guard<std::mutex> g(mu_);
    auto it = blocks_.upper_bound(a);
    if (it == blocks_.begin()) return false;
    --it;
    return a < it->first + it->second.size;
  }

 private:
  struct Block {
    size_t size;
    bool locked;
  };

  static void free(void* p);

  std::mutex mu_;
  std::map<uintptr_t, Block> blocks_;

  friend PinnedAllocator& pinned();
};

PinnedAllocator& pinned() {
  static auto* a = new PinnedAllocator();  // leaked: buffers may be freed during interpreter exit
  return *a;
}

void PinnedAllocator::free(void* p) {
  PinnedAllocator& a = pinned();
  Block b{0, false};
  {
    std::lock_guard<std::mutex> g(a.mu_);
    auto it = a.blocks_.find(reinterpret_cast<uintptr_t>(p));
    if (it != a.blocks_.end()) {
      b = it->second;
      a.blocks_.erase(it);
    }
  }
  if (b.locked) munlock(p, b.size);
  c10::GetCPUAllocator()->raw_deallocate(p);
}

// ---- hooks --------------------------------------------------------------------------------------

struct Hooks final : public at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  at::Device getDeviceFromPtr(void*) const override { return {kZynq, 0}; }
  bool isPinnedPtr(const void* data) const override { return data != nullptr && pinned().contains(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return &pinned(); }
};

// ---- device guard: streams and events -----------------------------------------------------------

std::atomic<c10::DeviceIndex> g_device_count{1};  // boards named when pynqtorch was imported
thread_local c10::DeviceIndex t_device = 0;
thread_local c10::StreamId t_stream = 0;
std::atomic<c10::StreamId> g_next_stream{1};

using Clock = std::chrono::steady_clock;

struct Guard final : public c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kZynq; }
  c10::Device exchangeDevice(c10::Device d) const override {
    c10::Device old = getDevice();
    setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return {kZynq, t_device}; }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kZynq, "expected a zynq device, got ", d);
    if (d.has_index()) t_device = d.index();  // indices are checked where devices are named (torch.zynq)
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.has_index()) t_device = d.index();
  }
  c10::Stream getStream(c10::Device d) const override {
    return c10::Stream(c10::Stream::UNSAFE, {kZynq, d.has_index() ? d.index() : t_device}, t_stream);
  }
  c10::Stream getNewStream(c10::Device d, int) const override {
    return c10::Stream(c10::Stream::UNSAFE, {kZynq, d.has_index() ? d.index() : t_device}, g_next_stream++);
  }
  c10::Stream getStreamFromGlobalPool(c10::Device d, bool) const override { return getNewStream(d, 0); }
  c10::Stream exchangeStream(c10::Stream s) const override {
    c10::Stream old = getStream(s.device());
    t_stream = s.id();
    return old;
  }
  c10::DeviceIndex deviceCount() const noexcept override { return g_device_count.load(); }

  // An event is the host time at which it was recorded (all work before it has finished by then).
  void record(void** event, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {
    if (*event == nullptr) *event = new Clock::time_point();
    *static_cast<Clock::time_point*>(*event) = Clock::now();
  }
  void destroyEvent(void* event, const c10::DeviceIndex) const noexcept override {
    delete static_cast<Clock::time_point*>(event);
  }
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void synchronizeEvent(void*) const override {}
  double elapsedTime(void* start, void* end, const c10::DeviceIndex) const override {
    TORCH_CHECK(start != nullptr && end != nullptr, "both events must be recorded before elapsed_time");
    auto d = *static_cast<Clock::time_point*>(end) - *static_cast<Clock::time_point*>(start);
    return std::chrono::duration<double, std::milli>(d).count();
  }
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
  void recordDataPtrOnStream(const c10::DataPtr&, const c10::Stream&) const override {}
};

// ---- device allocator (statistics) --------------------------------------------------------------

// op 0: fill out[0..2] = bytes allocated, peak bytes, live allocations; op 1: reset the peak.
using StatsFn = void (*)(int op, int64_t* out);
std::atomic<StatsFn> g_stats{nullptr};

class DeviceAllocator final : public c10::DeviceAllocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    TORCH_CHECK(nbytes == 0, "zynq storages hold their data in a host buffer made with the tensor: create a zynq "
                "tensor (torch.empty(..., device='zynq')) instead of a bare zynq storage of ", nbytes, " bytes");
    return {nullptr, c10::Device(kZynq, 0)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
  bool initialized() override { return true; }
  void emptyCache(c10::MempoolId_t) override {}  // nothing is cached: host buffers are freed with their tensors
  void recordStream(const c10::DataPtr&, c10::Stream) override {}
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex) override {
    int64_t v[3] = {0, 0, 0};
    if (StatsFn f = g_stats.load()) f(0, v);
    c10::CachingDeviceAllocator::DeviceStats s;
    for (auto* arr : {&s.allocated_bytes, &s.reserved_bytes, &s.active_bytes, &s.requested_bytes}) {
      auto& st = (*arr)[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
      st.current = v[0];
      st.peak = v[1];
    }
    for (auto* arr : {&s.allocation, &s.active, &s.segment}) {
      (*arr)[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current = v[2];
    }
    return s;
  }
  void resetAccumulatedStats(c10::DeviceIndex) override {}
  void resetPeakStats(c10::DeviceIndex) override {
    if (StatsFn f = g_stats.load()) f(1, nullptr);
  }
  std::pair<size_t, size_t> getMemoryInfo(c10::DeviceIndex) override {
    auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return {static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * page, static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * page};
  }
};

}  // namespace

extern "C" {

// Register hooks, guard and allocator (once); returns 1 if the hooks are ours, 0 if others came first.
int pynqtorch_install(int device_count, StatsFn stats) {
  static std::once_flag once;
  static int ours = 0;
  g_device_count = static_cast<c10::DeviceIndex>(device_count);
  g_stats = stats;
  std::call_once(once, [] {
    if (at::isPrivateUse1HooksRegistered()) return;
    at::RegisterPrivateUse1HooksInterface(new Hooks());
    c10::impl::registerDeviceGuard(kZynq, new Guard());
    static DeviceAllocator allocator;
    c10::SetAllocator(kZynq, &allocator);
    ours = 1;
  });
  return ours;
}

}
