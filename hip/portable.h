// The one vendor-specific file under hip/: thread and block ids, barriers, warp shuffles, the
// reciprocal square root and f16/bf16 conversion, mapped onto compiler builtins so the kernels
// build with no GPU SDK headers at all:
//
//   NVIDIA: clang -x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=sm_XX
//   AMD:    clang -x hip --offload-arch=gfxXXX -nogpulib -nogpuinc --cuda-device-only
//
// Everything else in hip/ uses only what this header defines. The warp (wavefront) size is
// NORM_WARP: 64 on gfx9 (MI200/MI300), 32 on gfx10+ and NVIDIA. Never assume 32 elsewhere.
//
// A third target exists for tests only: NORM_HOST_SIM=<warp size> compiles the kernels as plain
// C++ for the host, one OS thread per GPU thread (src/gpu/sim.rs, tests/sim/sim.cpp).
#pragma once

#if !defined(__NVPTX__) && !defined(__AMDGCN__) && !defined(NORM_HOST_SIM)
#error "hip/portable.h: compile for an NVIDIA (nvptx) or AMD (amdgcn) device target"
#endif

#if defined(NORM_HOST_SIM)
#define __global__
#define __device__
#define __shared__ static thread_local // a block runs on one OS thread, blocks one by one
#endif

#ifndef __global__
#define __global__ __attribute__((global))
#endif
#ifndef __device__
#define __device__ __attribute__((device))
#endif
#ifndef __shared__
#define __shared__ __attribute__((shared))
#endif

// Every device helper is inlined: the kernels are templates and nothing here is called twice
// with different shapes inside one instantiation.
#define NORM_DEV __device__ __attribute__((always_inline)) inline
#define NORM_NOINLINE __device__ __attribute__((noinline))

typedef unsigned int norm_u32;
typedef unsigned short norm_u16;
typedef unsigned long long norm_u64;

#if defined(__NVPTX__)
#define NORM_WARP 32
// The most threads a block of the one-row-at-a-time kernels is launched with (src/gpu/geometry.rs
// MAX_BLOCK); it caps the compiler at 85 registers a thread.
#define NORM_LAUNCH_BOUNDS __attribute__((launch_bounds(768)))
// The fused op's one-row-at-a-time kernels with an f32 weight for 2-byte input, and both ops'
// _var kernels with one, run at most 640 threads a block (src/gpu/geometry.rs MAX_BLOCK_WIDE):
// x, the residual and the f32 weight of two chunks a lane do not fit 80 registers (ptxas
// spilled 4-8 bytes; 16 in rms_norm_f16_wf32_var); 640 threads allow 96.
#define NORM_LAUNCH_BOUNDS_WIDE __attribute__((launch_bounds(640)))
// The several-rows-per-block kernels run at most 256 threads a block (src/gpu/geometry.rs ROWS_BLOCK).
#define NORM_LAUNCH_BOUNDS_ROWS __attribute__((launch_bounds(256)))
// The staged kernels run at most 256 threads a block (src/gpu/geometry.rs STAGED_BLOCK; the
// channel ones exactly that, src/gpu/channel_plan.rs CHANNEL_STAGED_BLOCK) and keep to 64
// registers a thread (four blocks fit), so that their blocks, and the rows or tiles they stage,
// are not limited to one or two a multiprocessor by registers that only the other loops need.
#define NORM_LAUNCH_BOUNDS_STAGED __attribute__((launch_bounds(256, 4)))
// The staged channel kernels (hip/norm_channel_staged.h) keep to 40 registers: six blocks of 256
// threads a multiprocessor where six tiles fit (ptxas sm_90 took 44 with 32-bit shared
// addresses: five; it needs no more than 40 without spilling).
#define NORM_LAUNCH_BOUNDS_CHAN_STAGED __attribute__((launch_bounds(256, 6)))
// The register channel kernels (hip/norm_channel.h) run at most 256 threads a block (src/gpu/channel_plan.rs
// CHANNEL_MAX_BLOCK), two blocks a multiprocessor: 128 registers a thread (ptxas sm_90 used 113
// to 120 of them; a cap of 80, three blocks, spilled).
#define NORM_LAUNCH_BOUNDS_CHAN __attribute__((launch_bounds(256, 2)))
// The q/k norm + rotary embedding kernels (hip/norm_rope.h) run at most 512 threads a block
// (src/gpu/rope_plan.rs ROPE_MAX_BLOCK): 128 registers a thread (at 768, 80, ptxas spilled).
#define NORM_LAUNCH_BOUNDS_ROPE __attribute__((launch_bounds(512)))
// The bf16, f32 and f64 chunk kernels of q/k norm + RoPE fit 64 registers without spilling (f16
// and the single-value kernels do not): six blocks of 160 threads a multiprocessor instead of
// four at 74 registers, 1180 -> 989 us for Wan 14B's q and k in bf16 on an H200 (2026-12-03).
#define NORM_LAUNCH_BOUNDS_ROPE_64 __attribute__((launch_bounds(512, 2)))
// The quantised-output kernels (hip/quant.h) run at most 512 threads a block (src/gpu/geometry.rs
// QUANT_MAX_BLOCK): the row's values are formed twice (largest |y|, then the bytes), and at 768
// (80 registers) ptxas spilled 8 bytes in the _wf32 kernels. Their rows kernels keep 256.
#define NORM_LAUNCH_BOUNDS_QUANT __attribute__((launch_bounds(512, 1)))
#define NORM_LAUNCH_BOUNDS_ROWS_QUANT __attribute__((launch_bounds(256, 2)))
NORM_DEV norm_u32 norm_tid() { return __nvvm_read_ptx_sreg_tid_x(); }
NORM_DEV norm_u32 norm_ntid() { return __nvvm_read_ptx_sreg_ntid_x(); }
NORM_DEV norm_u32 norm_bid() { return __nvvm_read_ptx_sreg_ctaid_x(); }
// Block-wide barrier that also orders shared-memory accesses.
NORM_DEV void norm_barrier() { __nvvm_barrier_sync(0); }
// Butterfly shuffle across the whole warp: the value of lane (lane ^ mask). Every lane of the
// warp must execute it (blocks are whole warps; the kernels never return early around one).
NORM_DEV float norm_shfl_xor(float v, int mask) {
  return __nvvm_shfl_sync_bfly_f32(0xffffffffu, v, mask, 0x1f);
}
NORM_DEV int norm_shfl_xor_i(int v, int mask) {
  return __nvvm_shfl_sync_bfly_i32(0xffffffffu, v, mask, 0x1f);
}
#elif defined(__AMDGCN__)
// clang <= 19 says the wave size in __AMDGCN_WAVEFRONT_SIZE__; newer clang dropped that macro
// (deprecated in 20), so fall back on the family: gfx9 (MI100 to MI350) runs wave64 only, and
// gfx10/11/12 compile for wave32 unless asked otherwise (build.rs never asks).
#if defined(__AMDGCN_WAVEFRONT_SIZE__)
#define NORM_WARP __AMDGCN_WAVEFRONT_SIZE__
#elif defined(__GFX9__)
#define NORM_WARP 64
#else
#define NORM_WARP 32
#endif
#define NORM_LAUNCH_BOUNDS __attribute__((amdgpu_flat_work_group_size(1, 768)))
#define NORM_LAUNCH_BOUNDS_WIDE __attribute__((amdgpu_flat_work_group_size(1, 640)))
#define NORM_LAUNCH_BOUNDS_ROWS __attribute__((amdgpu_flat_work_group_size(1, 256)))
#define NORM_LAUNCH_BOUNDS_CHAN __attribute__((amdgpu_flat_work_group_size(1, 256)))
#define NORM_LAUNCH_BOUNDS_ROPE __attribute__((amdgpu_flat_work_group_size(1, 512)))
#define NORM_LAUNCH_BOUNDS_ROPE_64 NORM_LAUNCH_BOUNDS_ROPE
#define NORM_LAUNCH_BOUNDS_QUANT __attribute__((amdgpu_flat_work_group_size(1, 512)))
#define NORM_LAUNCH_BOUNDS_ROWS_QUANT __attribute__((amdgpu_flat_work_group_size(1, 256)))
NORM_DEV norm_u32 norm_tid() { return __builtin_amdgcn_workitem_id_x(); }
NORM_DEV norm_u32 norm_ntid() { return __builtin_amdgcn_workgroup_size_x(); }
NORM_DEV norm_u32 norm_bid() { return __builtin_amdgcn_workgroup_id_x(); }
NORM_DEV void norm_barrier() {
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
  __builtin_amdgcn_s_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}
// Blocks are 1-D and whole wavefronts, so the lane is the thread id modulo the wave size.
NORM_DEV int norm_shfl_xor_i(int v, int mask) {
  const int lane = (int)(norm_tid() & (NORM_WARP - 1));
  return __builtin_amdgcn_ds_bpermute((lane ^ mask) << 2, v);
}
NORM_DEV float norm_shfl_xor(float v, int mask) {
  return __builtin_bit_cast(float, norm_shfl_xor_i(__builtin_bit_cast(int, v), mask));
}
#else // NORM_HOST_SIM: ids, barriers and shuffles from the simulator (tests/sim/sim.cpp)
#define NORM_WARP NORM_HOST_SIM
#define NORM_LAUNCH_BOUNDS
#define NORM_LAUNCH_BOUNDS_WIDE
#define NORM_LAUNCH_BOUNDS_ROWS
#define NORM_LAUNCH_BOUNDS_STAGED
#define NORM_LAUNCH_BOUNDS_CHAN_STAGED
#define NORM_LAUNCH_BOUNDS_CHAN
#define NORM_LAUNCH_BOUNDS_ROPE
#define NORM_LAUNCH_BOUNDS_ROPE_64
#define NORM_LAUNCH_BOUNDS_QUANT
#define NORM_LAUNCH_BOUNDS_ROWS_QUANT
norm_u32 norm_sim_tid();
norm_u32 norm_sim_ntid();
norm_u32 norm_sim_bid();
void norm_sim_barrier();
int norm_sim_shfl_xor(int v, int mask);
NORM_DEV norm_u32 norm_tid() { return norm_sim_tid(); }
NORM_DEV norm_u32 norm_ntid() { return norm_sim_ntid(); }
NORM_DEV norm_u32 norm_bid() { return norm_sim_bid(); }
NORM_DEV void norm_barrier() { norm_sim_barrier(); }
NORM_DEV int norm_shfl_xor_i(int v, int mask) { return norm_sim_shfl_xor(v, mask); }
NORM_DEV float norm_shfl_xor(float v, int mask) {
  return __builtin_bit_cast(float, norm_shfl_xor_i(__builtin_bit_cast(int, v), mask));
}
#endif

// Asynchronous 16-byte copies from global to shared memory, in groups: norm_async_copy16 issues
// one (both addresses 16-byte aligned), norm_async_commit closes the calling thread's current
// group, and norm_async_wait<N>() waits until at most N of its groups are still in flight, after
// which the thread sees the data of the older groups' copies (other threads see it only after a
// barrier). NVIDIA sm_80+: cp.async.cg (the copy bypasses registers and L1), written as inline
// asm on the 32-bit shared address: clang 19 cannot select the builtin with the 32-bit shared
// pointers the build uses (build/nvptx-flags, -fcuda-short-ptr). The host simulator
// performs each copy at the wait that covers it, so a read before its wait sees stale data there.
// Elsewhere: a plain load and store (correct; the load then holds registers until it lands).
// NORM_ASYNC is 1 where copies are truly asynchronous.
#if defined(__NVPTX__) && __CUDA_ARCH__ >= 800
#define NORM_ASYNC 1
NORM_DEV void norm_async_copy16(void* smem, const void* gmem) {
  const norm_u32 s = (norm_u32)(norm_u64)(__attribute__((address_space(3))) void*)smem;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s),
               "l"((__attribute__((address_space(1))) const void*)gmem)
               : "memory");
}
NORM_DEV void norm_async_commit() { __nvvm_cp_async_commit_group(); }
template <int N> NORM_DEV void norm_async_wait() { __nvvm_cp_async_wait_group(N); }
#elif defined(NORM_HOST_SIM)
#define NORM_ASYNC 1
void norm_sim_async_copy16(void* smem, const void* gmem);
void norm_sim_async_commit();
void norm_sim_async_wait(int n);
NORM_DEV void norm_async_copy16(void* smem, const void* gmem) { norm_sim_async_copy16(smem, gmem); }
NORM_DEV void norm_async_commit() { norm_sim_async_commit(); }
template <int N> NORM_DEV void norm_async_wait() { norm_sim_async_wait(N); }
#else
#define NORM_ASYNC 0
struct alignas(16) norm_bytes16 { norm_u32 w[4]; };
NORM_DEV void norm_async_copy16(void* smem, const void* gmem) {
  *(norm_bytes16*)smem = *(const norm_bytes16*)gmem;
}
NORM_DEV void norm_async_commit() {}
template <int N> NORM_DEV void norm_async_wait() {}
#endif

// The launch's dynamic shared memory (its size is set by the host at launch), 16-byte aligned.
#if defined(NORM_HOST_SIM)
char* norm_sim_dyn_smem();
NORM_DEV char* norm_dyn_smem() { return norm_sim_dyn_smem(); }
#else
NORM_DEV char* norm_dyn_smem() {
  extern __shared__ __attribute__((aligned(16))) char norm_smem[];
  return norm_smem;
}
#endif

// Hides a register's value from the optimiser (emits no instruction), so values derived from it
// are recomputed after this point instead of being kept live: register-pressure control.
#if defined(__AMDGCN__)
NORM_DEV void norm_opaque(norm_u32& v) { asm volatile("" : "+v"(v)); }
#else
NORM_DEV void norm_opaque(norm_u32& v) { asm volatile("" : "+r"(v)); }
#endif

// Scalar-register relief for wave64 AMD (gfx9: MI200, MI300). There every uniform value and
// every lane mask (64 bits) sits in at most 102 scalar registers, and the fused two-read loop
// (5 row pointers, row bounds, team shape, weight-mode flags, rescue) overflowed them into
// spills. With NORM_GFX9 the helpers below move the loop's row pointers to vector registers
// (plenty there) and make the team shape opaque per row, so values derived from it are
// recomputed per row rather than held across all of the block's rows. Elsewhere (NVIDIA, wave32
// AMD) they emit nothing and leave the code unchanged.
#if defined(__AMDGCN__) && NORM_WARP == 64
#define NORM_GFX9 1
#else
#define NORM_GFX9 0
#endif

// A uniform pointer held in per-lane (vector) registers from here on.
template <typename P> NORM_DEV void norm_to_lanes(P& p) {
#if NORM_GFX9
  asm volatile("" : "+v"(p));
#else
  (void)p;
#endif
}
// A per-lane value / a uniform value made opaque here (see norm_opaque).
NORM_DEV void norm_refresh_lane(int& v) {
#if NORM_GFX9
  asm volatile("" : "+v"(v));
#else
  (void)v;
#endif
}
NORM_DEV void norm_refresh_uniform(int& v) {
#if NORM_GFX9
  asm volatile("" : "+s"(v));
#else
  (void)v;
#endif
}

NORM_DEV double norm_shfl_xor(double v, int mask) {
  const norm_u64 u = __builtin_bit_cast(norm_u64, v);
  const int lo = norm_shfl_xor_i((int)(norm_u32)u, mask);
  const int hi = norm_shfl_xor_i((int)(norm_u32)(u >> 32), mask);
  return __builtin_bit_cast(double, ((norm_u64)(norm_u32)hi << 32) | (norm_u64)(norm_u32)lo);
}

// 1 / sqrt(v), correctly rounded division of a correctly rounded square root on both vendors
// (the approximate rsqrt instructions differ between vendors by an ulp or two). Called once per
// row, so its cost does not show.
NORM_DEV float norm_rsqrt(float v) { return 1.0f / __builtin_sqrtf(v); }
NORM_DEV double norm_rsqrt(double v) { return 1.0 / __builtin_sqrt(v); }

// Storage types of the 16-bit formats: raw bits, converted only here.
struct norm_f16 { norm_u16 bits; };
struct norm_bf16 { norm_u16 bits; };

NORM_DEV float norm_f16_to_f32(norm_u16 h) { return (float)__builtin_bit_cast(_Float16, h); }
// Round to nearest even (the hardware conversion on both vendors).
NORM_DEV norm_u16 norm_f32_to_f16(float v) { return __builtin_bit_cast(norm_u16, (_Float16)v); }

NORM_DEV float norm_bf16_to_f32(norm_u16 b) {
  return __builtin_bit_cast(float, (norm_u32)b << 16);
}

// Round to nearest even; NaN stays a (quiet) NaN.
NORM_DEV norm_u16 norm_f32_to_bf16(float v) {
#if defined(__NVPTX__) && __CUDA_ARCH__ >= 800
  return __builtin_bit_cast(norm_u16, __nvvm_f2bf16_rn(v));
#else
  const norm_u32 u = __builtin_bit_cast(norm_u32, v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (norm_u16)((u >> 16) | 0x0040u);
  return (norm_u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}

// Two bf16 values packed in one word, `lo` in the low half; rounding as above.
NORM_DEV norm_u32 norm_pack_bf16x2(float lo, float hi) {
#if defined(__NVPTX__) && __CUDA_ARCH__ >= 800
  return __builtin_bit_cast(norm_u32, __nvvm_ff2bf16x2_rn(hi, lo));
#else
  return (norm_u32)norm_f32_to_bf16(lo) | ((norm_u32)norm_f32_to_bf16(hi) << 16);
#endif
}

NORM_DEV norm_u32 norm_pack_f16x2(float lo, float hi) {
  return (norm_u32)norm_f32_to_f16(lo) | ((norm_u32)norm_f32_to_f16(hi) << 16);
}

// a * b for two packed pairs of bf16 (f16) values, lo in the low half, each product rounded
// once to nearest even. The product of two bf16 (f16) values is exact in f32, so this is the
// f32 product rounded, as the kernels compute it elsewhere (a bf16 product below f32's normal
// range aside: the f32 fallback rounds it twice). NVIDIA: one packed fused multiply-add with a
// -0 addend (a * b + -0 keeps the product's sign of zero); elsewhere in f32.
NORM_DEV norm_u32 norm_mul_bf16x2(norm_u32 a, norm_u32 b) {
#if defined(__NVPTX__) && __CUDA_ARCH__ >= 800
  norm_u32 r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(0x80008000u));
  return r;
#else
  const auto f = [](norm_u32 p, int h) { return norm_bf16_to_f32((norm_u16)(p >> (16 * h))); };
  return norm_pack_bf16x2(f(a, 0) * f(b, 0), f(a, 1) * f(b, 1));
#endif
}

NORM_DEV norm_u32 norm_mul_f16x2(norm_u32 a, norm_u32 b) {
#if defined(__NVPTX__)
  norm_u32 r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(0x80008000u));
  return r;
#else
  const auto f = [](norm_u32 p, int h) { return norm_f16_to_f32((norm_u16)(p >> (16 * h))); };
  return norm_pack_f16x2(f(a, 0) * f(b, 0), f(a, 1) * f(b, 1));
#endif
}

// fp8 e4m3fn conversion in hardware: NORM_HW_E4M3 is 1 where an instruction converts two floats
// (NVIDIA sm_90: cvt.rn.satfinite.e4m3x2.f32, round to nearest even, saturated to +-448, NaN to
// 0x7f; sm_89 has it from PTX ISA 8.1 only, above the 7.8 its cubin is built with), and then
// norm_hw_e4m3x2 gives the bytes, lo in bits 0..7; elsewhere hip/quant.h converts in integer
// arithmetic.
#if defined(__NVPTX__) && __CUDA_ARCH__ >= 900
#define NORM_HW_E4M3 1
NORM_DEV norm_u32 norm_hw_e4m3x2(float lo, float hi) {
  norm_u16 r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}
#else
#define NORM_HW_E4M3 0
#endif

// f32 -> i8 in hardware: NORM_HW_I8 is 1 where one instruction converts (NVIDIA:
// cvt.rni.sat.s8.f32, round to nearest even, saturated to -128..127, NaN to 0), and then
// norm_hw_i8 gives the byte (norm_hw_i8x4 four of them); elsewhere hip/quant.h converts in
// float arithmetic.
#if defined(__NVPTX__)
#define NORM_HW_I8 1
NORM_DEV norm_u32 norm_hw_i8(float v) {
  norm_u16 r;
  asm("cvt.rni.sat.s8.f32 %0, %1;" : "=h"(r) : "f"(v));
  return r & 0xffu;
}
// Four values' bytes in one word, a in bits 0..7: four conversions and three byte permutes (the
// conversion one at a time spent a sign extension, a mask and a shift on each byte).
NORM_DEV norm_u32 norm_hw_i8x4(float a, float b, float c, float d) {
  norm_u32 r;
  asm("{\n\t.reg .b32 t0, t1, t2, t3;\n\t"
      "cvt.rni.sat.s8.f32 t0, %1;\n\tcvt.rni.sat.s8.f32 t1, %2;\n\t"
      "cvt.rni.sat.s8.f32 t2, %3;\n\tcvt.rni.sat.s8.f32 t3, %4;\n\t"
      "prmt.b32 t0, t0, t1, 0x0040;\n\tprmt.b32 t2, t2, t3, 0x0040;\n\t"
      "prmt.b32 %0, t0, t2, 0x5410;\n\t}"
      : "=r"(r)
      : "f"(a), "f"(b), "f"(c), "f"(d));
  return r;
}
#else
#define NORM_HW_I8 0
#endif

// The larger (MAX) or the smaller of each half of two packed bf16 (BF16) or f16 pairs, a NaN
// operand ignored (the other returned, as fmaxf / fminf): NORM_HW_MAX2 is 1 where one
// instruction does it (NVIDIA sm_80+: max.bf16x2, min.f16x2, ...); elsewhere hip/quant.h
// compares in f32.
#if defined(__NVPTX__) && __CUDA_ARCH__ >= 800
#define NORM_HW_MAX2 1
template <bool MAX, bool BF16> NORM_DEV norm_u32 norm_pick_x2(norm_u32 a, norm_u32 b) {
  norm_u32 r;
  if constexpr (MAX && BF16) asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (MAX) asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (BF16) asm("min.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else asm("min.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
#else
#define NORM_HW_MAX2 0
#endif

// 1 when compiling for AMD (amdgcn), for choices of code shape that only AMD's register
// allocation needs (e.g. hip/rms_norm.hip's dispatch_k).
#if defined(__AMDGCN__)
#define NORM_AMD 1
#else
#define NORM_AMD 0
#endif
