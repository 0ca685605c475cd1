/* LSTM time loops for fast exact training (core/fast.py), as plain C.
 *
 * Why: XLA:CPU runs each step of a time loop as ~15 separate thunks around a matmul that
 * reached ~60 GFLOP/s here (TensorFlow's prebuilt kernels; its start-up message lists
 * AVX2, AVX-512 and FMA as unused); a step of a batch-32 LSTM spent two thirds of its time
 * outside the matmul (BENCHMARKS.md, "How fast mode got here"). Here a whole
 * layer's forward (or backward) pass is one call: input projection, every step's
 * recurrent matmul and gate math, and the weight gradients, with one small GEMM written
 * for this CPU (compiled with -march=native on the machine that runs it).
 *
 * Conventions (same as core/fast.py's XLA loops): arrays are time-major and row-major,
 * feats (T, B, F), gates (T, B, 4U) in Keras order [i, f, g, o]; the candidate block g
 * of kernel, bias and rk arrives scaled by 2, so one sigmoid serves every gate:
 * tanh(a) = 2 * sigmoid(2a) - 1. Only steps [start, end) run; the caller zeroes the
 * other rows of the outputs.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
/* The register block: R rows of a times NV 16-wide column vectors of w (the last vector
 * masked by ``last``), R * NV <= 24 accumulators. Inlined with constant R and NV, they stay
 * in registers for the whole K loop: each loaded vector of w serves R rows. */
static inline __attribute__((always_inline)) void block(
    const int R, const int NV, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs,
    const float *w, ptrdiff_t ldw, float *z, ptrdiff_t ldz, __mmask16 last) {
  __m512 acc[8][6];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++)
      acc[r][v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, z + r * ldz + v * 16);
  for (int k = 0; k < K; k++) {
    __m512 wv[6];
    for (int v = 0; v < NV; v++)
      wv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, w + k * ldw + v * 16);
    for (int r = 0; r < R; r++) {
      const __m512 bv = _mm512_set1_ps(a[r * ars + k * acs]);
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(bv, wv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++)
      _mm512_mask_storeu_ps(z + r * ldz + v * 16, v == NV - 1 ? last : 0xFFFF, acc[r][v]);
}

/* R rows of a against all N columns of w: blocks of NV vectors, then the rest. */
#define ROWS(R, NV)                                                                     \
  static void rows_##R(int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs,      \
                       const float *w, ptrdiff_t ldw, float *z, ptrdiff_t ldz) {        \
    const int nvec = (N + 15) / 16;                                                     \
    const __mmask16 tail = (N % 16) ? (__mmask16)((1u << (N % 16)) - 1u) : 0xFFFF;      \
    int q = 0;                                                                          \
    for (; q + (NV) <= nvec; q += (NV))                                                 \
      block(R, NV, K, a, ars, acs, w + q * 16, ldw, z + q * 16, ldz,                    \
            q + (NV) == nvec ? tail : 0xFFFF);                                          \
    const float *wq = w + q * 16;                                                       \
    float *zq = z + q * 16;                                                             \
    switch (nvec - q) {                                                                 \
      case 5: block(R, (NV) > 5 ? 5 : 1, K, a, ars, acs, wq, ldw, zq, ldz, tail); break; \
      case 4: block(R, (NV) > 4 ? 4 : 1, K, a, ars, acs, wq, ldw, zq, ldz, tail); break; \
      case 3: block(R, (NV) > 3 ? 3 : 1, K, a, ars, acs, wq, ldw, zq, ldz, tail); break; \
      case 2: block(R, (NV) > 2 ? 2 : 1, K, a, ars, acs, wq, ldw, zq, ldz, tail); break; \
      case 1: block(R, 1, K, a, ars, acs, wq, ldw, zq, ldz, tail); break;               \
      default: break;                                                                   \
    }                                                                                   \
  }
ROWS(8, 3)
ROWS(4, 6)
ROWS(1, 6)
#endif

/* Rows of w read per pass: a pass's slice of w (KC x N) stays in the L2 cache while every
 * row block of a uses it. */
#define KC 128

/* z[i][j] += sum_k a[i * ars + k * acs] * w[k * ldw + j] for i < M, j < N, k < K.
 * (ars, acs) = (K, 1) reads a row-major; (1, M) reads the transpose of a (K, M) array. */
static void gemm(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                 const float *w, ptrdiff_t ldw, float *z, ptrdiff_t ldz) {
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = K - k0 < KC ? K - k0 : KC;
    const float *ak = a + k0 * acs, *wk = w + k0 * ldw;
#if defined(__AVX512F__)
    int i = 0;
    for (; i + 8 <= M; i += 8) rows_8(N, kc, ak + i * ars, ars, acs, wk, ldw, z + i * ldz, ldz);
    for (; i + 4 <= M; i += 4) rows_4(N, kc, ak + i * ars, ars, acs, wk, ldw, z + i * ldz, ldz);
    for (; i < M; i++) rows_1(N, kc, ak + i * ars, ars, acs, wk, ldw, z + i * ldz, ldz);
#else
    for (int i = 0; i < M; i++)
      for (int k = 0; k < kc; k++) {
        const float b = ak[i * ars + k * acs];
        const float *restrict wr = wk + k * ldw;
        float *restrict zr = z + i * ldz;
        for (int j = 0; j < N; j++) zr[j] += b * wr[j];
      }
#endif
  }
}

/* IEEE arithmetic throughout (no -ffast-math): a saturated gate must give exactly 0 or 1
 * and a NaN must stay NaN, so that diverging training is seen as diverging. glibc's
 * vector expf is only used under -ffast-math, where 1 / (1 + exp(88.7)) came out NaN. */
static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

#if defined(__AVX512F__)
/* exp for 16 lanes: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by Cephes' degree-6
 * polynomial (about 1 ulp), times 2^n by scalef (overflow to inf, underflow to 0, NaN
 * stays NaN). */
static inline __m512 exp16(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

static inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

/* tanh(x) = 2 sigmoid(2x) - 1 */
static inline __m512 tanh16(__m512 x) {
  const __m512 two = _mm512_set1_ps(2.0f);
  return _mm512_fmsub_ps(two, sigmoid16(_mm512_mul_ps(two, x)), _mm512_set1_ps(1.0f));
}

static inline __mmask16 lanes(int left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}
#endif

/* s[n] = sigmoid(s[n]) for n < count. */
static void sigmoid_inplace(float *s, int count) {
#if defined(__AVX512F__)
  for (int n = 0; n < count; n += 16) {
    const __mmask16 m = lanes(count - n);
    _mm512_mask_storeu_ps(s + n, m, sigmoid16(_mm512_maskz_loadu_ps(m, s + n)));
  }
#else
  for (int n = 0; n < count; n++) s[n] = sigm(s[n]);
#endif
}

/* One row's cell update from its gate sigmoids s = [i, f, g, o] (g of the doubled
 * candidate): c = f c + i (2g - 1), h = o tanh(c). */
static void cell_row(int U, const float *s, float *c, float *h) {
  const float *i_ = s, *f_ = s + U, *g_ = s + 2 * U, *o_ = s + 3 * U;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  for (int u = 0; u < U; u += 16) {
    const __mmask16 m = lanes(U - u);
    const __m512 i = _mm512_maskz_loadu_ps(m, i_ + u), f = _mm512_maskz_loadu_ps(m, f_ + u),
                 g = _mm512_fmsub_ps(two, _mm512_maskz_loadu_ps(m, g_ + u), one),
                 o = _mm512_maskz_loadu_ps(m, o_ + u);
    const __m512 cn = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, c + u), _mm512_mul_ps(i, g));
    _mm512_mask_storeu_ps(c + u, m, cn);
    _mm512_mask_storeu_ps(h + u, m, _mm512_mul_ps(o, tanh16(cn)));
  }
#else
  for (int u = 0; u < U; u++) {
    const float cn = f_[u] * c[u] + i_[u] * (2.0f * g_[u] - 1.0f);
    c[u] = cn;
    h[u] = o_[u] * (2.0f * sigm(2.0f * cn) - 1.0f);
  }
#endif
}

/* One row's backward step: from dh (this step's output gradient), dc (in: the cell's
 * gradient from the step after; out: for the step before), the gate sigmoids a and the
 * previous cell cp, the pre-activation gradients dz = [di, df, dg, do]. */
static void cell_row_backward(int U, const float *a, const float *cp, const float *dh,
                              float *dc, float *dz) {
  const float *i_ = a, *f_ = a + U, *g_ = a + 2 * U, *o_ = a + 3 * U;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f),
               half = _mm512_set1_ps(0.5f);
  for (int u = 0; u < U; u += 16) {
    const __mmask16 m = lanes(U - u);
    const __m512 dhv = _mm512_maskz_loadu_ps(m, dh + u), i = _mm512_maskz_loadu_ps(m, i_ + u),
                 f = _mm512_maskz_loadu_ps(m, f_ + u),
                 g = _mm512_fmsub_ps(two, _mm512_maskz_loadu_ps(m, g_ + u), one),
                 o = _mm512_maskz_loadu_ps(m, o_ + u), cpv = _mm512_maskz_loadu_ps(m, cp + u);
    const __m512 tc = tanh16(_mm512_fmadd_ps(f, cpv, _mm512_mul_ps(i, g)));
    const __m512 dcv = _mm512_fmadd_ps(_mm512_mul_ps(dhv, o), _mm512_fnmadd_ps(tc, tc, one),
                                       _mm512_maskz_loadu_ps(m, dc + u));
    const __m512 di = _mm512_mul_ps(_mm512_mul_ps(dcv, g), _mm512_mul_ps(i, _mm512_sub_ps(one, i)));
    const __m512 df = _mm512_mul_ps(_mm512_mul_ps(dcv, cpv), _mm512_mul_ps(f, _mm512_sub_ps(one, f)));
    const __m512 dg = _mm512_mul_ps(_mm512_mul_ps(dcv, i),
                                    _mm512_mul_ps(_mm512_fnmadd_ps(g, g, one), half));
    const __m512 dov = _mm512_mul_ps(_mm512_mul_ps(dhv, tc), _mm512_mul_ps(o, _mm512_sub_ps(one, o)));
    _mm512_mask_storeu_ps(dz + u, m, di);
    _mm512_mask_storeu_ps(dz + U + u, m, df);
    _mm512_mask_storeu_ps(dz + 2 * U + u, m, dg);
    _mm512_mask_storeu_ps(dz + 3 * U + u, m, dov);
    _mm512_mask_storeu_ps(dc + u, m, _mm512_mul_ps(dcv, f));
  }
#else
  for (int u = 0; u < U; u++) {
    const float dhv = dh[u], i = i_[u], f = f_[u], g = 2.0f * g_[u] - 1.0f, o = o_[u],
                cpv = cp[u];
    const float tc = 2.0f * sigm(2.0f * (f * cpv + i * g)) - 1.0f;
    const float dcv = dc[u] + dhv * o * (1.0f - tc * tc);
    dz[u] = dcv * g * i * (1.0f - i);
    dz[U + u] = dcv * cpv * f * (1.0f - f);
    dz[2 * U + u] = dcv * i * (1.0f - g * g) * 0.5f;
    dz[3 * U + u] = dhv * tc * o * (1.0f - o);
    dc[u] = dcv * f;
  }
#endif
}

static void transpose(int rows, int cols, const float *src, float *dst) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

/* Forward over steps [start, end): acts[t] = the gate sigmoids, hprev[t] / cprev[t] = the
 * state before step t; h, c hold the initial state on entry and the final one on exit. */
void lab_lstm_forward(int T, int B, int F, int U, const float *feats, const float *kernel,
                      const float *bias, const float *rk, int start, int end, float *acts,
                      float *hprev, float *cprev, float *h, float *c) {
  (void)T;
  const int G = 4 * U;
  const int chunk = B >= KC ? 1 : KC / B; /* steps per input-projection GEMM */
  for (int t = start; t < end; t++) {
    float *s = acts + (size_t)t * B * G;
    if ((t - start) % chunk == 0) { /* acts = bias + feats @ kernel for the next steps,
                                       just before they run (still in the L2 cache) */
      const int rows = (t + chunk < end ? chunk : end - t) * B;
      for (int r = 0; r < rows; r++) memcpy(s + (size_t)r * G, bias, sizeof(float) * G);
      gemm(rows, G, F, feats + (size_t)t * B * F, F, 1, kernel, G, s, G);
    }
    memcpy(hprev + (size_t)t * B * U, h, sizeof(float) * B * U);
    memcpy(cprev + (size_t)t * B * U, c, sizeof(float) * B * U);
    gemm(B, G, U, h, U, 1, rk, G, s, G);
    sigmoid_inplace(s, B * G);
    for (int r = 0; r < B; r++) cell_row(U, s + r * G, c + r * U, h + r * U);
  }
}

/* Backward over steps end-1 .. start. dh, dc: the gradients of the final h, c on entry,
 * of the initial h0, c0 on exit; dseq (T, B, U), the gradient of the output sequence, or
 * NULL. Writes dfeats rows [start, end) and the weight gradients dkernel (F, 4U), dbias
 * (4U), drk (U, 4U). Scratch: dz (T, B, 4U), rkt (4U, U), kt (4U, F). */
void lab_lstm_backward(int T, int B, int F, int U, const float *feats, const float *acts,
                       const float *hprev, const float *cprev, const float *dseq, float *dh,
                       float *dc, const float *kernel, const float *rk, int start, int end,
                       float *dfeats, float *dkernel, float *dbias, float *drk, float *dz,
                       float *rkt, float *kt) {
  (void)T;
  const int G = 4 * U;
  memset(dkernel, 0, sizeof(float) * F * G);
  memset(dbias, 0, sizeof(float) * G);
  memset(drk, 0, sizeof(float) * U * G);
  if (end <= start) return;
  transpose(U, G, rk, rkt);
  transpose(F, G, kernel, kt);
  const int chunk = B >= KC ? 1 : KC / B; /* steps per weight-gradient GEMM */
  int pending = end;                      /* steps [t, pending) await their GEMMs */
  for (int t = end - 1; t >= start; t--) {
    const float *a = acts + (size_t)t * B * G, *cp = cprev + (size_t)t * B * U;
    float *dzt = dz + (size_t)t * B * G;
    if (dseq) {
      const float *ds = dseq + (size_t)t * B * U;
#pragma omp simd
      for (int n = 0; n < B * U; n++) dh[n] += ds[n];
    }
    for (int r = 0; r < B; r++)
      cell_row_backward(U, a + r * G, cp + r * U, dh + r * U, dc + r * U, dzt + r * G);
    memset(dh, 0, sizeof(float) * B * U);
    gemm(B, U, G, dzt, G, 1, rkt, U, dh, U);
    if (pending - t == chunk || t == start) { /* the weight gradients of the last few
                                                 steps, while their dz is in the L2 cache */
      const int rows = (pending - t) * B;
      const float *dzs = dzt;
      float *dfs = dfeats + (size_t)t * B * F;
      memset(dfs, 0, sizeof(float) * rows * F);
      gemm(rows, F, G, dzs, G, 1, kt, F, dfs, F);                              /* dz @ kernel^T */
      gemm(F, G, rows, feats + (size_t)t * B * F, 1, F, dzs, G, dkernel, G);   /* feats^T @ dz */
      gemm(U, G, rows, hprev + (size_t)t * B * U, 1, U, dzs, G, drk, G);       /* hprev^T @ dz */
      for (int r = 0; r < rows; r++) {
        const float *restrict zr = dzs + (size_t)r * G;
#pragma omp simd
        for (int j = 0; j < G; j++) dbias[j] += zr[j];
      }
      pending = t;
    }
  }
}
