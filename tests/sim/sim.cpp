// The kernels of hip/ run on the host, for tests (src/gpu/sim.rs builds this file with
// -DNORM_HOST_SIM=<warp size>). Every GPU thread of a block is a fiber (ucontext) on the calling
// OS thread; a fiber runs until it reaches a barrier or a warp shuffle, and is resumed once all
// the threads that meet there (its block, or its warp) have arrived. Blocks run one after
// another, so `__shared__` arrays (static here) belong to the block that runs. It exercises the
// kernels' indexing, team logic, reductions, vector and scalar paths and in-place aliasing on
// plain memory; it does not model timing, memory ordering between blocks, or a device
// compiler's code.
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ucontext.h>
#include <vector>

#include "../../hip/rms_norm.hip"

namespace {

// A meeting point: `size` threads arrive, then all go on; `gen` counts completed meetings.
struct Sync {
  int size = 0, arrived = 0;
  long gen = 0;
};

// An asynchronous copy not yet performed.
struct Copy {
  void* dst;
  const void* src;
};

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  Sync* waiting = nullptr;
  long wait_gen = 0;
  bool done = false;
  std::vector<Copy> open;                // the group being issued
  std::vector<std::vector<Copy>> groups; // committed, oldest first
};

constexpr size_t STACK = 256 << 10;

struct Block {
  unsigned bid = 0, ntid = 0;
  Sync block_sync;
  std::vector<Sync> warp_sync;
  std::vector<int> shfl; // one value per thread
  std::vector<Fiber> fibers;
  ucontext_t sched;
  unsigned current = 0;
  void (*kernel)(const void*) = nullptr; // a thunk calling the kernel with *args
  alignas(16) char args[sizeof(NormArgs)];
  std::vector<char> smem; // dynamic shared memory, 16-byte aligned below
};

thread_local Block* t_block = nullptr;

void trampoline() {
  Block& b = *t_block;
  b.kernel(b.args);
  b.fibers[b.current].done = true;
  // Returning resumes uc_link, the scheduler.
}

// Arrive at `s`; yield to the scheduler until every member has arrived.
void meet(Sync& s) {
  Block& b = *t_block;
  const long g = s.gen;
  if (++s.arrived == s.size) {
    s.arrived = 0;
    ++s.gen;
    return;
  }
  Fiber& f = b.fibers[b.current];
  f.waiting = &s;
  f.wait_gen = g;
  swapcontext(&f.ctx, &b.sched);
}

typedef void (*Kernel)(const void*);
struct Entry {
  const char* name;
  Kernel kernel;
};
static_assert(sizeof(RopeArgs) == sizeof(NormArgs), "one argument buffer serves both");

// A thunk calling kernel K with the argument buffer read as its parameter type.
#define SIM_ENTRY(NAME, K, ARGS) {NAME, [](const void* p) { K(*static_cast<const ARGS*>(p)); }}
#define SIM_NORM(NAME, K) SIM_ENTRY(NAME, K, NormArgs)
#define SIM_ENTRIES(TAG)                                                                           \
  SIM_NORM("rms_norm_" #TAG, rms_norm_##TAG), SIM_NORM("rms_norm_" #TAG "_rows", rms_norm_##TAG##_rows), \
      SIM_NORM("fused_add_rms_norm_" #TAG, fused_add_rms_norm_##TAG),                              \
      SIM_NORM("fused_add_rms_norm_" #TAG "_rows", fused_add_rms_norm_##TAG##_rows),               \
      SIM_NORM("rms_norm_" #TAG "_staged", rms_norm_##TAG##_staged),                               \
      SIM_NORM("fused_add_rms_norm_" #TAG "_staged", fused_add_rms_norm_##TAG##_staged),           \
      SIM_NORM("rms_norm_" #TAG "_rows_staged", rms_norm_##TAG##_rows_staged),                     \
      SIM_NORM("fused_add_rms_norm_" #TAG "_rows_staged", fused_add_rms_norm_##TAG##_rows_staged), \
      SIM_NORM("rms_norm_" #TAG "_var", rms_norm_##TAG##_var),                                     \
      SIM_NORM("fused_add_rms_norm_" #TAG "_var", fused_add_rms_norm_##TAG##_var),                 \
      SIM_NORM("rms_norm_" #TAG "_chan", rms_norm_##TAG##_chan),                                   \
      SIM_NORM("fused_add_rms_norm_" #TAG "_chan", fused_add_rms_norm_##TAG##_chan),               \
      SIM_NORM("rms_norm_" #TAG "_chan_staged", rms_norm_##TAG##_chan_staged),                     \
      SIM_NORM("fused_add_rms_norm_" #TAG "_chan_staged", fused_add_rms_norm_##TAG##_chan_staged), \
      SIM_NORM("rms_norm_" #TAG "_quant", rms_norm_##TAG##_quant),                                 \
      SIM_NORM("rms_norm_" #TAG "_rows_quant", rms_norm_##TAG##_rows_quant),                       \
      SIM_NORM("fused_add_rms_norm_" #TAG "_quant", fused_add_rms_norm_##TAG##_quant),             \
      SIM_NORM("fused_add_rms_norm_" #TAG "_rows_quant", fused_add_rms_norm_##TAG##_rows_quant),   \
      SIM_NORM("rms_norm_" #TAG "_staged_quant", rms_norm_##TAG##_staged_quant),                   \
      SIM_NORM("fused_add_rms_norm_" #TAG "_staged_quant", fused_add_rms_norm_##TAG##_staged_quant), \
      SIM_NORM("rms_norm_" #TAG "_rows_staged_quant", rms_norm_##TAG##_rows_staged_quant),         \
      SIM_NORM("fused_add_rms_norm_" #TAG "_rows_staged_quant",                                    \
               fused_add_rms_norm_##TAG##_rows_staged_quant)
#define SIM_ROPE(TAG)                                                                              \
  SIM_ENTRY("rms_norm_rope_" #TAG, rms_norm_rope_##TAG, RopeArgs),                                 \
      SIM_ENTRY("rms_norm_rope_" #TAG "_scalar", rms_norm_rope_##TAG##_scalar, RopeArgs)

const Entry KERNELS[] = {SIM_ENTRIES(f32),      SIM_ENTRIES(f64),  SIM_ENTRIES(f16),
                         SIM_ENTRIES(f16_wf32), SIM_ENTRIES(bf16), SIM_ENTRIES(bf16_wf32),
                         SIM_ROPE(f32),         SIM_ROPE(f64),     SIM_ROPE(f16),
                         SIM_ROPE(bf16),        SIM_ROPE(f16_wt),  SIM_ROPE(bf16_wt)};

// Runs one block to completion; false on a deadlock (threads waiting that can never meet).
bool run_block(Block& b) {
  for (;;) {
    bool progress = false, all_done = true;
    for (unsigned i = 0; i < b.ntid; ++i) {
      Fiber& f = b.fibers[i];
      if (f.done) continue;
      all_done = false;
      if (f.waiting && f.waiting->gen == f.wait_gen) continue;
      f.waiting = nullptr;
      b.current = i;
      swapcontext(&b.sched, &f.ctx);
      progress = true;
    }
    if (all_done) return true;
    if (!progress) return false;
  }
}

} // namespace

// Asynchronous copies: recorded at issue, performed when a wait leaves their group behind, so a
// read of the destination before its wait sees what was there before.
void norm_sim_async_copy16(void* smem, const void* gmem) {
  Block& b = *t_block;
  b.fibers[b.current].open.push_back(Copy{smem, gmem});
}
void norm_sim_async_commit() {
  Fiber& f = t_block->fibers[t_block->current];
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
void norm_sim_async_wait(int n) {
  Fiber& f = t_block->fibers[t_block->current];
  while ((int)f.groups.size() > n) {
    for (const Copy& c : f.groups.front()) std::memcpy(c.dst, c.src, 16);
    f.groups.erase(f.groups.begin());
  }
}
char* norm_sim_dyn_smem() {
  char* p = t_block->smem.data();
  return p + ((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15);
}

norm_u32 norm_sim_tid() { return t_block->current; }
norm_u32 norm_sim_ntid() { return t_block->ntid; }
norm_u32 norm_sim_bid() { return t_block->bid; }
void norm_sim_barrier() { meet(t_block->block_sync); }
int norm_sim_shfl_xor(int v, int mask) {
  Block& b = *t_block;
  const unsigned t = b.current, lane = t % NORM_WARP, base = t - lane;
  Sync& w = b.warp_sync[t / NORM_WARP];
  b.shfl[t] = v;
  meet(w);
  const int r = b.shfl[base + (lane ^ (unsigned)mask)];
  meet(w);
  return r;
}

// Runs kernel `name` over `grid` blocks of `block` threads with argument `*a` (a NormArgs, or a
// RopeArgs for rms_norm_rope_*: both 192 bytes) and `smem` bytes of
// dynamic shared memory. Returns 0; -1 for an unknown kernel, -2 for a block that is not whole
// warps, -3 for a deadlock, -4 for copies still in flight when a thread ended.
extern "C" int norm_sim_launch(const char* name, const void* a, unsigned grid, unsigned block,
                               unsigned smem) {
  Kernel k = nullptr;
  for (const Entry& e : KERNELS)
    if (std::strcmp(e.name, name) == 0) k = e.kernel;
  if (!k) return -1;
  if (block == 0 || block % NORM_WARP != 0) return -2;
  Block b;
  b.ntid = block;
  b.kernel = k;
  std::memcpy(b.args, a, sizeof b.args);
  b.fibers.resize(block);
  for (Fiber& f : b.fibers) f.stack.reset(new char[STACK]);
  b.shfl.assign(block, 0);
  Block* saved = t_block;
  t_block = &b;
  int rc = 0;
  for (unsigned bid = 0; bid < grid && rc == 0; ++bid) {
    b.bid = bid;
    b.smem.assign(smem + 16, (char)0x5a); // poisoned per block: a read before its copy shows
    b.block_sync = Sync{(int)block, 0, 0};
    b.warp_sync.assign(block / NORM_WARP, Sync{NORM_WARP, 0, 0});
    for (Fiber& f : b.fibers) {
      f.done = false;
      f.waiting = nullptr;
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.get();
      f.ctx.uc_stack.ss_size = STACK;
      f.ctx.uc_link = &b.sched;
      makecontext(&f.ctx, trampoline, 0);
    }
    if (!run_block(b)) rc = -3;
    for (Fiber& f : b.fibers)
      if (rc == 0 && (!f.groups.empty() || !f.open.empty())) rc = -4;
  }
  t_block = saved;
  return rc;
}
