// The zynq device's runtime hooks in C++: the parts of a PyTorch backend that PyTorch only asks of C++.
//
// * PrivateUse1 hooks with a pinned-memory allocator (`pin_memory()`, `DataLoader(pin_memory=True)`,
//   `to("cpu", non_blocking=True)`): zynq memory is host memory, so "pinned" host memory is page-locked
//   CPU memory (mlock), tracked so `is_pinned()` answers for any pointer inside a pinned block.
// * A device guard with streams and events: every engine call is synchronous, so streams are labels,
//   synchronizing returns at once, and an event records the host time it was reached.
// * A device allocator for `torch.accelerator.memory_*`: its statistics come from the Python host
//   allocator (`device/allocator.py`) through a callback, merged with the memory the native fallback adopts.
//   While the native fallback is on, a direct storage allocation (`UntypedStorage(n, device="zynq")`, the
//   `clone` behind `copy.deepcopy` of a storage) gets CPU memory; otherwise it is refused with an explanation.
// * Allocation: `empty.memory_format` / `empty_strided` on zynq get CPU memory from the device allocator while the
//   native fallback is on (the Python kernels, over the Python host allocator, serve otherwise).
// * The native CPU fallback: boxed PrivateUse1 kernels, registered on a `torch::Library` of its own for the
//   ops `device/native.py` selects, doing what `device/fallback.py: run_on_cpu` does without Python.
// * The backend choice of `scaled_dot_product_attention`: PyTorch asks the `_fused_sdp_choice_stub`
//   DispatchStub (C++ only), not the dispatcher; its PrivateUse1 entry forwards to the zynq kernel of
//   `aten::_fused_sdp_choice` (registered in Python by the ops layer), which decides.
//
// Loaded with ctypes; `pynqtorch_install` registers the hooks once, `pynqtorch_fallback_enable/disable`
// switch the native fallback.

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/transformers/attention.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/TensorImpl.h>
#include <torch/library.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

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

// ---- memory adopted natively ------------------------------------------------------------------------

// Bytes and storages adopted by the native fallback (and allocated by the device allocator while it is on),
// and the peak of those plus the Python allocator's bytes, which Python reports in `g_host_bytes`.
std::atomic<int64_t> g_native_bytes{0}, g_native_count{0}, g_host_bytes{0}, g_peak{0};
std::atomic<bool> g_fallback_on{false};

void raise_peak() {
  int64_t now = g_native_bytes.load() + g_host_bytes.load();
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

// The context of a zynq storage made natively: it owns the CPU storage whose memory the zynq storage points at.
struct Adopted {
  c10::Storage cpu;
  int64_t nbytes;

  static void release(void* ctx) {
    auto* a = static_cast<Adopted*>(ctx);
    g_native_bytes -= a->nbytes;
    g_native_count -= 1;
    delete a;
  }
};

// A zynq data pointer to all of CPU storage `cpu` (taken over, not copied), on zynq device `index`.
c10::DataPtr adopt_data(c10::Storage cpu, c10::DeviceIndex index) {
  auto nbytes = static_cast<int64_t>(cpu.nbytes());
  void* data = cpu.data_ptr().get();
  auto* ctx = new Adopted{std::move(cpu), nbytes};
  g_native_bytes += nbytes;
  g_native_count += 1;
  raise_peak();
  return c10::DataPtr(data, ctx, &Adopted::release, c10::Device(kZynq, index));
}

// ---- device allocator (statistics) --------------------------------------------------------------

// op 0: fill out[0..2] = bytes allocated, peak bytes, live allocations; op 1: reset the peak; op 2: out[0] = the
// number of zynq devices now (`torch.zynq.device_count()`, which follows PYNQ_REMOTE_DEVICES).
using StatsFn = void (*)(int op, int64_t* out);
std::atomic<StatsFn> g_stats{nullptr};

class DeviceAllocator final : public c10::DeviceAllocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (g_fallback_on.load() && nbytes) {  // memory for a storage: CPU memory, accounted as adopted memory
      c10::Storage cpu(c10::Storage::use_byte_size_t(), nbytes, c10::GetCPUAllocator());
      return adopt_data(std::move(cpu), 0);
    }
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


// ---- the native CPU fallback ---------------------------------------------------------------------

// Calls and nanoseconds of one op, by the id Python gave it (kept across enable/disable until reset).
struct OpStat {
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> ns{0};
};
std::mutex g_fallback_mu;
std::deque<OpStat> g_op_stats;
std::unique_ptr<torch::Library> g_library;  // destroying it drops every native kernel

[[noreturn]] void device_mismatch(const c10::Device& other, const std::string& op) {
  TORCH_CHECK(false, "Expected all tensors to be on the same device, but found at least two devices, zynq:0 and ",
              other.str(), "! (in ", op, ")");
}

// Said of nested results (keep equal to fallback.NESTED_HINT).
constexpr const char* NESTED_HINT =
    " (nn.TransformerEncoder makes nested tensors from a src_key_padding_mask: build it with "
    "enable_nested_tensor=False)";

std::string layout_name(c10::Layout layout) {
  switch (layout) {
    case c10::kSparse: return "torch.sparse_coo";
    case c10::kSparseCsr: return "torch.sparse_csr";
    case c10::kSparseCsc: return "torch.sparse_csc";
    case c10::kSparseBsr: return "torch.sparse_bsr";
    case c10::kSparseBsc: return "torch.sparse_bsc";
    case c10::kMkldnn: return "torch._mkldnn";
    case c10::kJagged: return "torch.jagged";
    default: return "torch.strided";
  }
}

// A tensor with `like`'s dtype, geometry and conj/neg bits over `storage`, for `keys` (built in the current
// inference mode, as PyTorch builds every tensor).
at::Tensor make_tensor(c10::Storage storage, c10::DispatchKey key, const at::Tensor& like) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(key), like.dtype());
  impl->set_sizes_and_strides(like.sizes(), like.strides(), like.storage_offset());
  if (like.is_conj()) impl->_set_conj(true);
  if (like.is_neg()) impl->_set_neg(true);
  return at::Tensor(std::move(impl));
}

// The CPU view of zynq tensor `t`: its memory (not owned: `t` keeps it alive), sizes, strides, offset, bits.
at::Tensor cpu_view(const at::Tensor& t) {
  const c10::Storage& st = t.storage();
  c10::Storage cpu(c10::Storage::use_byte_size_t(), st.nbytes(),
                   c10::DataPtr(st.data_ptr().get(), c10::Device(c10::kCPU)), nullptr, false);
  return make_tensor(std::move(cpu), c10::DispatchKey::CPU, t);
}

// A zynq tensor on device `index` holding `r`, a fresh dense CPU result nobody else holds: its storage is taken over
// (not copied, accounted as adopted memory), conj/neg bits resolved first; built in the current inference mode.
at::Tensor adopt(const at::Tensor& r, c10::DeviceIndex index) {
  at::Tensor fresh = r.is_conj() || r.is_neg() ? r.resolve_conj().resolve_neg() : r;
  c10::Storage cpu = fresh.storage();
  size_t nbytes = cpu.nbytes();
  c10::Storage zynq(c10::Storage::use_byte_size_t(), nbytes, adopt_data(std::move(cpu), index), nullptr, false);
  return make_tensor(std::move(zynq), c10::DispatchKey::PrivateUse1, fresh);
}

void check_device(const std::optional<c10::Device>& device);  // below: tensors live on zynq:0

// One call: zynq arguments become CPU views, results become zynq tensors (`fallback.py: _Unwrapper`).
class Call {
 public:
  explicit Call(const std::string& name) : name_(name) {}

  c10::IValue arg(const c10::IValue& v) {
    if (v.isTensor()) return view(v.toTensor());
    if (v.isTensorList()) return map(v.toTensorList(), [this](const at::Tensor& t) { return view(t); });
    if (v.isOptionalTensorList()) {
      c10::List<std::optional<at::Tensor>> out;
      for (const std::optional<at::Tensor>& t : v.toOptionalTensorList()) {
        out.push_back(t.has_value() ? std::optional<at::Tensor>(view(*t)) : std::nullopt);
      }
      return out;
    }
    if (v.isDevice()) {
      c10::Device d = v.toDevice();
      if (d.type() == kZynq) {
        check_device(d);  // a factory's device: zynq:0 only
        return c10::Device(c10::kCPU);
      }
      wrap_ = false;
    }
    return v;
  }

  c10::IValue result(const c10::IValue& v) {
    if (v.isTensor()) return out(v.toTensor());
    if (v.isTensorList()) return map(v.toTensorList(), [this](const at::Tensor& t) { return out(t); });
    return v;
  }

 private:
  template <typename F>
  static c10::List<at::Tensor> map(const c10::List<at::Tensor>& in, F f) {
    c10::List<at::Tensor> res;
    res.reserve(in.size());
    for (const at::Tensor& t : in) res.push_back(f(t));
    return res;
  }

  at::Tensor view(const at::Tensor& t) {
    if (!t.defined()) return t;
    if (t.device().type() == kZynq) {
      for (const auto& [z, c] : pairs_) {
        if (z.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) return c;  // one tensor passed twice stays one
      }
      if (pairs_.empty()) index_ = t.device().index();
      pairs_.emplace_back(t, cpu_view(t));
      return pairs_.back().second;
    }
    if (t.dim() > 0) device_mismatch(t.device(), name_);
    return t;
  }

  at::Tensor out(const at::Tensor& r) {
    if (!r.defined() || !wrap_ || r.device().type() != c10::kCPU) return r;
    for (const auto& [z, c] : pairs_) {
      if (c.unsafeGetTensorImpl() == r.unsafeGetTensorImpl()) return z;
    }
    TORCH_CHECK(r.layout() == c10::kStrided && !r.is_nested(), name_, " made a ",
                r.is_nested() ? std::string("nested") : layout_name(r.layout()),
                " tensor: zynq tensors are dense (strided) only; use CPU tensors for other layouts",
                r.is_nested() ? NESTED_HINT : "");
    const c10::StorageImpl* sid = r.storage().unsafeGetStorageImpl();
    for (const auto& [z, c] : pairs_) {
      if (c.storage().unsafeGetStorageImpl() == sid) {  // a view: shares the zynq storage
        std::optional<c10::InferenceMode> mode;         // an inference tensor exactly when its base is one
        if (z.is_inference() != c10::InferenceMode::is_enabled()) mode.emplace(z.is_inference());
        return make_tensor(z.storage(), c10::DispatchKey::PrivateUse1, r);
      }
    }
    return adopt(r, index_);
  }

  const std::string& name_;
  std::vector<std::pair<at::Tensor, at::Tensor>> pairs_;  // zynq argument, its CPU view
  c10::DeviceIndex index_ = 0;
  bool wrap_ = true;
};

// Swallows the dispatcher's "Overriding a previously registered kernel" warning: replacing the Python
// fallback kernels is the point of the native ones.
struct Silent final : public c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

class FallbackKernel final : public c10::OperatorKernel {
 public:
  FallbackKernel(std::string name, OpStat* stat)
      : name_(std::move(name)), record_("zynq::cpu_fallback::" + name_), stat_(stat) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
    auto t0 = Clock::now();
    const size_t n_args = op.schema().arguments().size();
    const size_t begin = stack->size() - n_args;
    Call call(name_);
    for (size_t i = begin; i < stack->size(); ++i) (*stack)[i] = call.arg((*stack)[i]);
    {
      at::RecordFunction guard(at::RecordScope::USER_SCOPE);
      if (guard.isActive()) guard.before(std::string_view(record_));
      op.callBoxed(stack);
    }
    const size_t n_out = op.schema().returns().size();
    for (size_t i = stack->size() - n_out; i < stack->size(); ++i) (*stack)[i] = call.result((*stack)[i]);
    stat_->calls += 1;
    stat_->ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }

 private:
  std::string name_;    // aten::add.Tensor
  std::string record_;  // its name in profiler traces
  OpStat* stat_;
};

// A metadata view (`fallback.METADATA_VIEWS`): CPU's kernel run on the zynq tensor itself, counted.
class ViewKernel final : public c10::OperatorKernel {
 public:
  explicit ViewKernel(OpStat* stat) : stat_(stat) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
    auto t0 = Clock::now();
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
    stat_->calls += 1;
    stat_->ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }

 private:
  OpStat* stat_;
};

// ---- allocation ----------------------------------------------------------------------------------------

// Tensors live on zynq:0; the messages are those of `device/kernels.py: check_device` (kept equal, tested).
void check_device(const std::optional<c10::Device>& device) {
  if (!device.has_value() || !device->has_index() || device->index() == 0) return;
  int64_t count = g_device_count.load();
  if (StatsFn f = g_stats.load()) f(2, &count);
  TORCH_CHECK(device->index() < count, "zynq device ", device->str(), " does not exist: ", count,
              " zynq device(s) present");
  TORCH_CHECK(false, "cannot place a tensor on ", device->str(), ": zynq tensors live on zynq:0, in the host memory "
              "every board reads; further boards add compute units to the same device (the board target spreads "
              "every GEMM over all boards of PYNQ_REMOTE_DEVICES)");
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout>, std::optional<c10::Device> device, std::optional<bool>,
                               std::optional<c10::MemoryFormat> memory_format) {
  check_device(device);
  return at::detail::empty_generic(size, c10::GetAllocator(kZynq), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout>, std::optional<c10::Device> device, std::optional<bool>) {
  check_device(device);
  return at::detail::empty_strided_generic(size, stride, c10::GetAllocator(kZynq),
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

// A flat uint8 CPU tensor over `nbytes` bytes at `ptr` (a zynq storage made natively), not owning them, and
// resizable with the CPU allocator: a CPU `out=` kernel that grows it moves it into memory of its own, which the
// device then adopts (`storage.sync_from_cpu`), as it does for host buffers made in Python.
at::Tensor host_bytes(int64_t ptr, int64_t nbytes) {
  c10::Storage st(c10::Storage::use_byte_size_t(), static_cast<size_t>(nbytes),
                  c10::DataPtr(reinterpret_cast<void*>(ptr), c10::Device(c10::kCPU)), c10::GetCPUAllocator(), true);
  auto impl = c10::make_intrusive<c10::TensorImpl>(std::move(st), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                   caffe2::TypeMeta::Make<uint8_t>());
  impl->set_sizes_contiguous({nbytes});
  return at::Tensor(std::move(impl));
}

// `storage.adopt_result` in C++ (the ops layer's fresh CPU results as zynq tensors), used while the native fallback
// serves: a dense CPU tensor on zynq:0, as the native fallback wraps its results.
at::Tensor adopt_result(const at::Tensor& r) {
  TORCH_CHECK(r.device().is_cpu() && r.layout() == c10::kStrided && !r.is_nested(),
              "adopt_result takes a dense CPU tensor, got a ", layout_name(r.layout()), " tensor on ", r.device());
  return adopt(r, 0);
}

TORCH_LIBRARY(pynqtorch_host, m) {
  m.def("host_bytes(int ptr, int nbytes) -> Tensor", &host_bytes);
  m.def("adopt_result(Tensor r) -> Tensor", &adopt_result);
}

// sdpa's backend choice for zynq tensors: the PrivateUse1 kernel of `aten::_fused_sdp_choice`, called
// directly (a redispatch, so fake tensors whose meta kernel asks this stub do not come back here).
int64_t fused_sdp_choice(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                         const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal,
                         std::optional<double> scale, bool enable_gqa) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("aten::_fused_sdp_choice", "")
                       .typed<int64_t(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const std::optional<at::Tensor>&, double, bool, std::optional<double>,
                                      bool)>();
  return op.redispatch(c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), query, key, value, attn_mask,
                       dropout_p, is_causal, scale, enable_gqa);
}

}  // namespace

extern "C" {

// Register hooks, guard, allocator and the sdpa choice (once); returns 1 if the hooks are ours, 0 if others came first.
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
    at::native::_fused_sdp_choice_stub.set_privateuse1_dispatch_ptr(&fused_sdp_choice);
    ours = 1;
  });
  return ours;
}

// Register the native fallback for `n` ops (`names[i]` without the namespace, e.g. "add.Tensor"; `ids[i]` its
// counter; `views[i]` nonzero for a metadata view; the allocation ops get their kernels above), replacing any earlier set. Returns the number registered; on failure 0 (none stay registered) and
// the reason in `error` (`error_len` bytes).
int pynqtorch_fallback_enable(const char** names, const int* ids, const int* views, int n, char* error,
                              int error_len) {
  std::lock_guard<std::mutex> g(g_fallback_mu);
  g_fallback_on = false;
  g_library.reset();
  Silent silent;
  c10::WarningUtils::WarningHandlerGuard quiet(&silent);
  try {
    auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", c10::DispatchKey::PrivateUse1,
                                                __FILE__, __LINE__);
    for (int i = 0; i < n; ++i) {
      while (g_op_stats.size() <= static_cast<size_t>(ids[i])) g_op_stats.emplace_back();
      std::string name(names[i]);
      OpStat* stat = &g_op_stats[ids[i]];
      if (name == "empty.memory_format") {
        lib->impl(name.c_str(), TORCH_FN(empty_memory_format));
      } else if (name == "empty_strided") {
        lib->impl(name.c_str(), TORCH_FN(empty_strided));
      } else if (views[i]) {
        lib->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunctor(std::make_unique<ViewKernel>(stat)));
      } else {
        lib->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunctor(
                                    std::make_unique<FallbackKernel>("aten::" + name, stat)));
      }
    }
    g_library = std::move(lib);
  } catch (const std::exception& e) {
    std::snprintf(error, static_cast<size_t>(error_len), "%s", e.what());
    return 0;
  }
  g_fallback_on = true;
  return n;
}

// Drop every native fallback kernel (the Python ones registered before serve again).
void pynqtorch_fallback_disable() {
  std::lock_guard<std::mutex> g(g_fallback_mu);
  g_fallback_on = false;
  g_library.reset();
}

// Counters of ops 0..n-1: calls and seconds (zero for ids never registered); `reset` zeroes them afterwards.
void pynqtorch_fallback_counters(int n, int64_t* calls, double* seconds, int reset) {
  std::lock_guard<std::mutex> g(g_fallback_mu);
  for (int i = 0; i < n; ++i) {
    if (static_cast<size_t>(i) < g_op_stats.size()) {
      calls[i] = reset ? g_op_stats[i].calls.exchange(0) : g_op_stats[i].calls.load();
      seconds[i] = 1e-9 * static_cast<double>(reset ? g_op_stats[i].ns.exchange(0) : g_op_stats[i].ns.load());
    } else {
      calls[i] = 0;
      seconds[i] = 0;
    }
  }
}

// Natively adopted memory: out = {bytes, storages, peak of those plus the Python allocator's bytes}.
// `host_delta` first reports a change of the Python allocator's bytes (raising the peak); `reset_peak` sets
// the peak to the current total.
void pynqtorch_memory(int64_t host_delta, int reset_peak, int64_t* out) {
  if (host_delta) {
    g_host_bytes += host_delta;
    raise_peak();
  }
  if (reset_peak) g_peak = g_native_bytes.load() + g_host_bytes.load();
  out[0] = g_native_bytes.load();
  out[1] = g_native_count.load();
  out[2] = g_peak.load();
}

}
