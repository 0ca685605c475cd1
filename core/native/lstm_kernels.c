/* LSTM time loops for fast exact training (core/fast), and the CNN + LSTM's
 * Conv1D + ReLU + MaxPooling1D, as plain C.
 *
 * Why: XLA:CPU runs each step of a time loop as ~15 separate thunks around a matmul that
 * reached ~60 GFLOP/s here (TensorFlow's prebuilt kernels; its start-up message lists
 * AVX2, AVX-512 and FMA as unused); a step of a batch-32 LSTM spent two thirds of its time
 * outside the matmul (BENCHMARKS.md, "How fast mode got here"). Here a whole
 * layer's forward (or backward) pass is one call, compiled with -march=native on the
 * machine that runs it. With AVX-512, each step is one register-blocked GEMM with the
 * cell's update on its accumulators: forward, [h, x] @ [rk; kernel] (recurrent matmul and
 * input projection in one, K = U + F) and the gate math; backward, dz @ rk^T and the
 * cell's backward step. The weight gradients run every few steps as larger GEMMs on rows
 * still in the L2 cache. A general GEMM (below) serves those and the convolution both
 * ways (end of this file); BENCHMARKS.md section 1c measures them against the CPU's peak.
 *
 * Conventions (same as core/fast's XLA loops): arrays are time-major and row-major,
 * feats (T, B, F); kernel, bias and rk in Keras's gate order [i, f, g, o], the candidate
 * block g scaled by 2, so one sigmoid serves every gate: tanh(a) = 2 * sigmoid(2a) - 1.
 * acts (T, B, 4U), the gate sigmoids the forward pass leaves for the backward, are in
 * the AVX-512 kernels' own column order (see Layout), in Keras's otherwise. Only steps
 * [start, end) run; the caller zeroes the other rows of the outputs.
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
 * in registers for the whole K loop: each loaded vector of w serves R rows. The
 * accumulators start from z0 (row stride ldz0: 0 repeats one row, such as a bias), or from
 * zero where z0 is NULL. */
static inline __attribute__((always_inline)) void block(
    const int R, const int NV, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs,
    const float *w, ptrdiff_t ldw, float *z, ptrdiff_t ldz, const float *z0, ptrdiff_t ldz0,
    __mmask16 last) {
  __m512 acc[16][6];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++)
      acc[r][v] = z0 ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, z0 + r * ldz0 + v * 16)
                     : _mm512_setzero_ps();
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

/* All M rows of a against the NV column vectors of w at vector q: row blocks of R, then
 * of 4, then single rows. The panel of w (kc x 16 NV) stays in the L1 cache while every
 * row block reads it. */
#define PANEL(R, NV)                                                                    \
  static void panel_##R##_##NV(int M, int kc, const float *a, ptrdiff_t ars,            \
                               ptrdiff_t acs, const float *w, ptrdiff_t ldw, float *z,  \
                               ptrdiff_t ldz, const float *z0, ptrdiff_t ldz0,          \
                               __mmask16 last) {                                        \
    int i = 0;                                                                          \
    for (; i + (R) <= M; i += (R))                                                      \
      block(R, NV, kc, a + i * ars, ars, acs, w, ldw, z + i * ldz, ldz,                 \
            z0 ? z0 + i * ldz0 : 0, ldz0, last);                                        \
    for (; i + 4 <= M; i += 4)                                                          \
      block(4, NV, kc, a + i * ars, ars, acs, w, ldw, z + i * ldz, ldz,                 \
            z0 ? z0 + i * ldz0 : 0, ldz0, last);                                        \
    for (; i < M; i++)                                                                  \
      block(1, NV, kc, a + i * ars, ars, acs, w, ldw, z + i * ldz, ldz,                 \
            z0 ? z0 + i * ldz0 : 0, ldz0, last);                                        \
  }
PANEL(8, 3)
PANEL(12, 2)
PANEL(16, 1)
#endif

/* Rows of w (the K dimension) per pass: each pass's panels of w fit the L1 cache. */
#define KC 256
/* Rows of a (steps x batch rows) per weight-gradient GEMM (and, without AVX-512, per
 * input-projection GEMM): they run every few steps, on rows still in the L2 cache. */
#define CHUNK_ROWS 128

/* z[i][j] = z0[i * ldz0 + j] (0 where z0 is NULL) + sum_k a[i * ars + k * acs] * w[k * ldw + j]
 * for i < M, j < N, k < K; z0 may be z itself (accumulate). (ars, acs) = (K, 1) reads a
 * row-major; (1, M) reads the transpose of a (K, M) array. */
static void gemm(int M, int N, int K, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                 const float *w, ptrdiff_t ldw, float *z, ptrdiff_t ldz, const float *z0,
                 ptrdiff_t ldz0) {
  if (K == 0) { /* nothing to add: z = z0 */
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) z[i * ldz + j] = z0 ? z0[i * ldz0 + j] : 0.0f;
    return;
  }
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = K - k0 < KC ? K - k0 : KC;
    const float *ak = a + k0 * acs, *wk = w + k0 * ldw;
    if (k0 > 0) z0 = z, ldz0 = ldz; /* later passes add to the first one's sums */
#if defined(__AVX512F__)
    const int nvec = (N + 15) / 16;
    const __mmask16 tail = (N % 16) ? (__mmask16)((1u << (N % 16)) - 1u) : 0xFFFF;
    int q = 0;
    for (; q + 3 <= nvec; q += 3)
      panel_8_3(M, kc, ak, ars, acs, wk + q * 16, ldw, z + q * 16, ldz,
                z0 ? z0 + q * 16 : 0, ldz0, q + 3 == nvec ? tail : 0xFFFF);
    if (nvec - q == 2)
      panel_12_2(M, kc, ak, ars, acs, wk + q * 16, ldw, z + q * 16, ldz,
                 z0 ? z0 + q * 16 : 0, ldz0, tail);
    else if (nvec - q == 1)
      panel_16_1(M, kc, ak, ars, acs, wk + q * 16, ldw, z + q * 16, ldz,
                 z0 ? z0 + q * 16 : 0, ldz0, tail);
#else
    for (int i = 0; i < M; i++) {
      float *restrict zr = z + i * ldz;
      for (int j = 0; j < N; j++) zr[j] = z0 ? z0[i * ldz0 + j] : 0.0f;
      for (int k = 0; k < kc; k++) {
        const float b = ak[i * ars + k * acs];
        const float *restrict wr = wk + k * ldw;
        for (int j = 0; j < N; j++) zr[j] += b * wr[j];
      }
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

/* 1 / (1 + exp(-x)). The reciprocal is rcp14's estimate and one Newton step (a division
 * takes ~4x as long and was a tenth of the backward pass): within ~2 ulp. Where
 * d = 1 + exp(-x) is inf the estimate is already the exact 0 (the Newton step would make
 * it NaN), and a NaN stays NaN. */
static inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 d = _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  const __m512 r = _mm512_rcp14_ps(d);
  const __mmask16 finite = _mm512_cmp_ps_mask(d, _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
  return _mm512_mask_fmadd_ps(r, finite, _mm512_fnmadd_ps(d, r, one), r); /* r + r(1 - dr) */
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

/* Steps per weight-gradient GEMM: lab_lstm_dz_steps(B) steps of B rows, CHUNK_ROWS in all. */
static int dz_steps(int B) { return B >= CHUNK_ROWS ? 1 : CHUNK_ROWS / B; }

/* 64-byte aligned start of a scratch buffer (the ops allocate 16 floats more). */
static float *aligned(float *p) {
  return (float *)(((size_t)p + 63) & ~(size_t)63);
}

/* The weight gradients of a few steps' rows (their dz still in the L2 cache): dfeats =
 * dz @ kernel^T (kt: kernel transposed, rows of ldk floats), and added to dk, drk, db:
 * feats^T @ dz, hprev^T @ dz and dz's column sums. */
static void weight_grads(int rows, int F, int U, const float *dz, const float *feats,
                         const float *hprev, const float *kt, int ldk, float *dfeats,
                         float *dk, float *drk, float *db) {
  const int G = 4 * U;
  gemm(rows, F, G, dz, G, 1, kt, ldk, dfeats, F, NULL, 0);
  gemm(F, G, rows, feats, 1, F, dz, G, dk, G, dk, G);
  gemm(U, G, rows, hprev, 1, U, dz, G, drk, G, drk, G);
  /* db's column sums 16 columns at a time, in registers (a pass over db per row was half
   * of this op's time outside its GEMMs); rows in order, as before */
  int j0 = 0;
  for (; j0 + 16 <= G; j0 += 16) {
    float acc[16];
    for (int j = 0; j < 16; j++) acc[j] = db[j0 + j];
    for (int r = 0; r < rows; r++) {
      const float *restrict zr = dz + (size_t)r * G + j0;
#pragma omp simd
      for (int j = 0; j < 16; j++) acc[j] += zr[j];
    }
    for (int j = 0; j < 16; j++) db[j0 + j] = acc[j];
  }
  for (int r = 0; r < rows && j0 < G; r++)
    for (int j = j0; j < G; j++) db[j] += dz[(size_t)r * G + j];
}

#if defined(__AVX512F__)
static long round16(long n) { return (n + 15) / 16 * 16; }

/* -- The gate columns' storage order (the AVX-512 kernels) ----------------------------------
 *
 * Units go in groups of 16: group j's 64 columns are [i, f, g, o] of units 16j .. 16j + 15,
 * so that one register block of 4 vectors holds every gate of 16 units and the cell update
 * runs on the GEMM's accumulators, with no pass over the pre-activations in memory. The
 * last t = U % 16 units follow, gate q's at column 64 ng + q t. acts and dz rows use this
 * order (4U columns each); the forward's packed weights pad the tail to one vector
 * [i f g o] (t lanes each) where t <= 4 (the seed models' 100 units: 6 groups and 4 units,
 * 25 vectors, none wasted), else to 4 vectors of t lanes. */
typedef struct {
  int U, ng, t, tailv, Gp; /* units, full groups, tail units, tail vectors, padded columns */
} Layout;

static Layout layout(int U) {
  Layout L = {U, U / 16, U % 16, 0, 0};
  L.tailv = L.t == 0 ? 0 : L.t <= 4 ? 1 : 4;
  L.Gp = 64 * L.ng + 16 * L.tailv;
  return L;
}

/* Storage column of gate q of unit u. */
static int stored_col(const Layout *L, int q, int u) {
  return u < 16 * L->ng ? 64 * (u / 16) + 16 * q + u % 16
                        : 64 * L->ng + q * L->t + (u - 16 * L->ng);
}

/* Its column in the forward's padded weights. */
static int padded_col(const Layout *L, int q, int u) {
  return u < 16 * L->ng || L->tailv == 1 ? stored_col(L, q, u)
                                         : 64 * L->ng + 16 * q + (u - 16 * L->ng);
}

/* Scratch floats: the forward's packed weights [rk; kernel] ((U + F) x Gp) and bias. */
long lab_lstm_forward_scratch(int F, int U) {
  return ((long)U + F + 1) * layout(U).Gp + 16;
}

/* The backward's: dz (dz_steps(B) steps of B rows, at least 2, 4U wide), rk and kernel
 * transposed into storage order (4U x round16(U), 4U x round16(F)), the tail's columns
 * for accumulate_quads (4 x 4U), and the weight gradients in storage order. */
long lab_lstm_backward_scratch(int B, int F, int U) {
  const long G = 4L * U;
  const int slots = dz_steps(B) > 1 ? dz_steps(B) : 2;
  return round16(slots * B * G) + G * (round16(U) + round16(F) + 4) + (F + U + 1) * G +
         16;
}

/* Cache lines to ask for while a step computes: the next step's rows, which are in memory
 * (acts alone is 51 KB a step at the seed's sizes). Up to 3 ranges, handed out a few lines
 * per register block (see accumulate), so that the requests overlap the arithmetic; asked
 * for in one burst at the start of a step, they stalled it (3 % of an epoch, perf). */
typedef struct {
  const char *p[3];
  long left[3]; /* lines */
  int write;    /* for writing: hprev and cprev rows, about to be written */
} Ahead;

static Ahead ahead(int write, const float *p0, size_t n0, const float *p1, size_t n1,
                   const float *p2, size_t n2) {
  Ahead a = {{(const char *)p0, (const char *)p1, (const char *)p2},
             {p0 ? (long)(n0 + 15) / 16 : 0, p1 ? (long)(n1 + 15) / 16 : 0,
              p2 ? (long)(n2 + 15) / 16 : 0},
             write};
  return a;
}

/* Up to max lines of a's next range: their start (NULL when none is left) and count. */
static inline const char *ahead_take(Ahead *a, int max, int *n) {
  for (int i = 0; i < 3; i++)
    if (a->left[i] > 0) {
      *n = a->left[i] < max ? (int)a->left[i] : max;
      const char *at = a->p[i];
      a->p[i] += 64L * *n;
      a->left[i] -= *n;
      return at;
    }
  *n = 0;
  return NULL;
}

/* acc[r][v] += sum_k a[r * lda + k] * w[k * ldw + 16 v] for r < R, v < NV (w's rows
 * 64-byte aligned). Inlined with constant R and NV, the accumulators stay in registers
 * and each loaded vector of w serves R rows. Every 4th k also asks for one of ahead's
 * lines. */
static inline __attribute__((always_inline)) void accumulate(
    const int R, const int NV, int K, const float *a, int lda, const float *w, ptrdiff_t ldw,
    __m512 (*acc)[4], Ahead *ah) {
  int npf = 0;
  const char *pf = ah ? ahead_take(ah, K / 4, &npf) : NULL;
  const int write = ah ? ah->write : 0;
  for (int k = 0; k < K; k++, w += ldw) {
    if ((k & 3) == 0 && (k >> 2) < npf) {
      if (write)
        __builtin_prefetch(pf + 64 * (k >> 2), 1, 3);
      else
        __builtin_prefetch(pf + 64 * (k >> 2), 0, 3);
    }
    __m512 wv[4];
    for (int v = 0; v < NV; v++) wv[v] = _mm512_load_ps(w + 16 * v);
    for (int r = 0; r < R; r++) {
      const __m512 b = _mm512_set1_ps(a[r * lda + k]);
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(b, wv[v], acc[r][v]);
    }
  }
}

/* acc[r] = the dot products of row r of a (K = 4 kq floats) with up to 4 columns of w,
 * which wq holds as kq vectors, lane 4 u + p of vector n = w[4 n + p][u]: lanes (u, p)
 * sum the k = p (mod 4) terms, then each unit's 4 lanes are added; the sums in lanes
 * 0..3. For the last <= 4 units of the backward's dh (the seed's 100 = 6 x 16 + 4): a
 * quarter of the FMAs of a 16-lane vector with 12 lanes idle. */
static inline __attribute__((always_inline)) void accumulate_quads(
    const int R, int K, const float *a, int lda, const float *wq, __m512 (*acc)[4],
    Ahead *ah) {
  int npf = 0;
  const char *pf = ah ? ahead_take(ah, K / 16, &npf) : NULL;
  for (int r = 0; r < R; r++) acc[r][0] = _mm512_setzero_ps();
  for (int n = 0; n < K / 4; n++) {
    if ((n & 3) == 0 && (n >> 2) < npf) __builtin_prefetch(pf + 64 * (n >> 2), 0, 3);
    const __m512 wv = _mm512_load_ps(wq + 16 * n);
    for (int r = 0; r < R; r++)
      acc[r][0] = _mm512_fmadd_ps(_mm512_broadcast_f32x4(_mm_loadu_ps(a + r * lda + 4 * n)),
                                  wv, acc[r][0]);
  }
  const __m512i first = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  for (int r = 0; r < R; r++) {
    __m512 x = acc[r][0];
    x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(2, 3, 0, 1)));
    x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
    acc[r][0] = _mm512_permutexvar_ps(first, x);
  }
}

/* The forward step for rows [0, R) of a row block and one group of columns: kind 0, a group
 * of 16 units (4 vectors); kind 2, the tail's 4 vectors of t lanes; kind 1, the tail's
 * single vector [i f g o]. acc = bias + h @ rk + x @ kernel (packed, from column col of
 * wp), then the gates: acts = their sigmoids (storage column scol), c and h of units
 * [u0, u0 + 16) or the tail's. */
static inline __attribute__((always_inline)) void fwd_rows(
    const int R, const int kind, const Layout *L, int F, int u0, int col, int scol,
    const float *h, const float *x, const float *wp, const float *bp, const float *cp,
    float *acts, float *cn, float *hn, Ahead *ah) {
  const int NV = kind == 1 ? 1 : 4, U = L->U, G = 4 * U, t = L->t;
  __m512 acc[16][4];
  for (int v = 0; v < NV; v++) {
    const __m512 b = _mm512_load_ps(bp + col + 16 * v);
    for (int r = 0; r < R; r++) acc[r][v] = b;
  }
  const float *w = wp + (size_t)(U + F) * col; /* the group's panel, 16 NV floats a row */
  accumulate(R, NV, U, h, U, w, 16 * NV, acc, ah);
  accumulate(R, NV, F, x, F, w + (size_t)U * 16 * NV, 16 * NV, acc, NULL);
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  const __mmask16 m = kind == 0 ? 0xFFFF : lanes(t);
  for (int r = 0; r < R; r++) {
    float *ar = acts + (size_t)r * G + scol;
    __m512 i, f, sg, o;
    if (kind == 1) {
      const __m512 s = sigmoid16(acc[r][0]);
      _mm512_mask_storeu_ps(ar, lanes(4 * t), s);
      const __m512i at = _mm512_add_epi32(
          _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
          _mm512_set1_epi32(t));
      i = s;
      f = _mm512_permutexvar_ps(at, s);
      sg = _mm512_permutexvar_ps(_mm512_add_epi32(at, _mm512_set1_epi32(t)), s);
      o = _mm512_permutexvar_ps(_mm512_add_epi32(at, _mm512_set1_epi32(2 * t)), s);
    } else {
      const int step = kind == 0 ? 16 : t;
      i = sigmoid16(acc[r][0]);
      f = sigmoid16(acc[r][1]);
      sg = sigmoid16(acc[r][2]);
      o = sigmoid16(acc[r][3]);
      if (kind == 0 && !(((size_t)acts | (size_t)(4 * G)) & 63)) {
        _mm512_stream_ps(ar, i);
        _mm512_stream_ps(ar + 16, f);
        _mm512_stream_ps(ar + 32, sg);
        _mm512_stream_ps(ar + 48, o);
      } else {
      _mm512_mask_storeu_ps(ar, m, i);
      _mm512_mask_storeu_ps(ar + step, m, f);
      _mm512_mask_storeu_ps(ar + 2 * step, m, sg);
      _mm512_mask_storeu_ps(ar + 3 * step, m, o);
      }
    }
    const __m512 g = _mm512_fmsub_ps(two, sg, one);
    const __m512 c = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, cp + r * U + u0),
                                     _mm512_mul_ps(i, g));
    _mm512_mask_storeu_ps(cn + r * U + u0, m, c);
    _mm512_mask_storeu_ps(hn + r * U + u0, m, _mm512_mul_ps(o, tanh16(c)));
  }
}

/* All B rows of one step, one group of columns at a time (its packed weights, (U + F) x 64
 * floats, stay in the L1 cache while every row block reads them). */
static void fwd_step(const Layout *L, int B, int F, const float *h, const float *x,
                     const float *wp, const float *bp, const float *cp, float *acts, float *cn,
                     float *hn, Ahead *ah) {
  const int U = L->U, G = 4 * U;
#define FWD(R, kind, u0, col, scol)                                                        \
  fwd_rows(R, kind, L, F, u0, col, scol, h + (size_t)r * U, x + (size_t)r * F, wp, bp,     \
           cp + (size_t)r * U, acts + (size_t)r * G, cn + (size_t)r * U, hn + (size_t)r * U, ah)
  for (int j = 0; j < L->ng; j++) {
    int r = 0;
    for (; r + 6 <= B; r += 6) FWD(6, 0, 16 * j, 64 * j, 64 * j);
    if (r + 4 <= B) FWD(4, 0, 16 * j, 64 * j, 64 * j), r += 4;
    if (r + 2 <= B) FWD(2, 0, 16 * j, 64 * j, 64 * j), r += 2;
    if (r < B) FWD(1, 0, 16 * j, 64 * j, 64 * j);
  }
  const int at = 64 * L->ng, u0 = 16 * L->ng;
  if (L->tailv == 1) {
    int r = 0;
    for (; r + 8 <= B; r += 8) FWD(8, 1, u0, at, at);
    for (; r < B; r++) FWD(1, 1, u0, at, at);
  } else if (L->tailv == 4) {
    int r = 0;
    for (; r + 4 <= B; r += 4) FWD(4, 2, u0, at, at);
    for (; r < B; r++) FWD(1, 2, u0, at, at);
  }
#undef FWD
}

/* Forward over steps [start, end): acts[t] = the gate sigmoids (storage order), hprev[t] /
 * cprev[t] = the state before step t; h, c hold the initial state on entry and the final
 * one on exit. Each step writes its new state straight into the next step's hprev / cprev
 * rows. */
void lab_lstm_forward(int T, int B, int F, int U, const float *feats, const float *kernel,
                      const float *bias, const float *rk, int start, int end, float *acts,
                      float *hprev, float *cprev, float *h, float *c, float *scratch) {
  (void)T;
  if (end <= start) return;
  const Layout L = layout(U);
  const int G = 4 * U, Gp = L.Gp;
  const size_t BU = (size_t)B * U;
  float *wp = aligned(scratch), *bp = wp + (size_t)(U + F) * Gp;
  memset(wp, 0, sizeof(float) * (size_t)(U + F + 1) * Gp);
  for (int q = 0; q < 4; q++)
    for (int u = 0; u < U; u++) {
      const int to = padded_col(&L, q, u), from = q * U + u;
      const int group = to < 64 * L.ng ? to / 64 * 64 : 64 * L.ng; /* its first column */
      const int width = to < 64 * L.ng ? 64 : 16 * L.tailv;
      float *panel = wp + (size_t)(U + F) * group + (to - group);
      for (int k = 0; k < U; k++) panel[(size_t)k * width] = rk[(size_t)k * G + from];
      for (int k = 0; k < F; k++) panel[(size_t)(U + k) * width] = kernel[(size_t)k * G + from];
      bp[to] = bias[from];
    }
  memcpy(hprev + start * BU, h, sizeof(float) * BU);
  memcpy(cprev + start * BU, c, sizeof(float) * BU);
  for (int t = start; t < end; t++) {

    float *hn = t + 1 < end ? hprev + (t + 1) * BU : h;
    float *cn = t + 1 < end ? cprev + (t + 1) * BU : c;
    Ahead ah = ahead(1, t + 2 < end ? hprev + (t + 2) * BU : NULL, BU,
                     t + 2 < end ? cprev + (t + 2) * BU : NULL, BU, NULL, 0);
    fwd_step(&L, B, F, hprev + t * BU, feats + (size_t)t * B * F, wp, bp, cprev + t * BU,
             acts + (size_t)t * B * G, cn, hn, &ah);
  }
  _mm_sfence(); /* the streamed rows of acts are seen before whatever runs next */
}

/* The backward step for rows [0, R) of a row block and unit vectors [v0, v0 + NV): the
 * gradient of h_t, acc = dzn @ rk^T (dzn: step t + 1's dz rows; rkt: rk transposed into
 * storage order, rows of ldr floats) or dh (K = 0: the last step), plus the output
 * sequence's ds; then the cell's backward step: dz (step t's, storage order) and dc. */
static inline __attribute__((always_inline)) void bwd_rows(
    const int R, const int NV, const Layout *L, int K, int v0, const float *dzn,
    const float *rkt, int ldr, const float *wq, const float *dh, const float *ds,
    const float *a, const float *cp, float *dc, float *dz, Ahead *ah) {
  const int U = L->U, G = 4 * U;
  __m512 acc[16][4];
  if (K && wq) {
    accumulate_quads(R, K, dzn, G, wq, acc, ah);
  } else {
    for (int r = 0; r < R; r++)
      for (int v = 0; v < NV; v++)
        acc[r][v] = K ? _mm512_setzero_ps()
                      : _mm512_maskz_loadu_ps(lanes(U - 16 * (v0 + v)), dh + r * U + 16 * (v0 + v));
    accumulate(R, NV, K, dzn, G, rkt + 16 * v0, ldr, acc, ah);
  }
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f),
               half = _mm512_set1_ps(0.5f);
  for (int v = 0; v < NV; v++) {
    const int j = v0 + v, u = 16 * j;
    const __mmask16 m = lanes(U - u);
    const int scol = j < L->ng ? 64 * j : 64 * L->ng, step = j < L->ng ? 16 : L->t;
    for (int r = 0; r < R; r++) {
      const float *ar = a + (size_t)r * G + scol;
      float *dzr = dz + (size_t)r * G + scol;
      const __m512 dhv = ds ? _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(m, ds + r * U + u))
                            : acc[r][v],
                   i = _mm512_maskz_loadu_ps(m, ar), f = _mm512_maskz_loadu_ps(m, ar + step),
                   g = _mm512_fmsub_ps(two, _mm512_maskz_loadu_ps(m, ar + 2 * step), one),
                   o = _mm512_maskz_loadu_ps(m, ar + 3 * step),
                   cpv = _mm512_maskz_loadu_ps(m, cp + r * U + u);
      const __m512 tc = tanh16(_mm512_fmadd_ps(f, cpv, _mm512_mul_ps(i, g)));
      const __m512 dcv = _mm512_fmadd_ps(_mm512_mul_ps(dhv, o), _mm512_fnmadd_ps(tc, tc, one),
                                         _mm512_maskz_loadu_ps(m, dc + r * U + u));
      _mm512_mask_storeu_ps(dzr, m,
                            _mm512_mul_ps(_mm512_mul_ps(dcv, g), _mm512_fnmadd_ps(i, i, i)));
      _mm512_mask_storeu_ps(dzr + step, m,
                            _mm512_mul_ps(_mm512_mul_ps(dcv, cpv), _mm512_fnmadd_ps(f, f, f)));
      _mm512_mask_storeu_ps(dzr + 2 * step, m,
                            _mm512_mul_ps(_mm512_mul_ps(dcv, i),
                                          _mm512_mul_ps(_mm512_fnmadd_ps(g, g, one), half)));
      _mm512_mask_storeu_ps(dzr + 3 * step, m,
                            _mm512_mul_ps(_mm512_mul_ps(dhv, tc), _mm512_fnmadd_ps(o, o, o)));
      _mm512_mask_storeu_ps(dc + r * U + u, m, _mm512_mul_ps(dcv, f));
    }
  }
}

/* One backward step over all B rows: row blocks of 8, unit vectors two at a time; the
 * tail of <= 4 units by accumulate_quads (wq). */
static void bwd_step(const Layout *L, int B, int K, const float *dzn, const float *rkt,
                     int ldr, const float *wq, const float *dh, const float *ds,
                     const float *a, const float *cp, float *dc, float *dz, Ahead *ah) {
  const int U = L->U, G = 4 * U, nv = L->ng + (L->tailv == 4);
#define BWD(R, NV, wq)                                                                       \
  bwd_rows(R, NV, L, K, v, dzn + (size_t)r * G, rkt, ldr, wq, dh + (size_t)r * U,           \
           ds ? ds + (size_t)r * U : NULL, a + (size_t)r * G, cp + (size_t)r * U,             \
           dc + (size_t)r * U, dz + (size_t)r * G, ah)
  int r = 0;
  for (; r + 8 <= B; r += 8) {
    int v = 0;
    for (; v + 2 <= nv; v += 2) BWD(8, 2, NULL);
    if (v < nv) BWD(8, 1, NULL), v++;
    if (L->tailv == 1) BWD(8, 1, wq);
  }
  for (; r < B; r++) { /* single rows (the padding prefix's): 4 vectors at a time, so
                          * that 4 FMA chains, not 2, hide the FMA's latency */
    int v = 0;
    for (; v + 4 <= nv; v += 4) BWD(1, 4, NULL);
    for (; v + 2 <= nv; v += 2) BWD(1, 2, NULL);
    if (v < nv) BWD(1, 1, NULL), v++;
    if (L->tailv == 1) BWD(1, 1, wq);
  }
#undef BWD
}

/* Backward over steps end-1 .. start. dh, dc: the gradients of the final h, c on entry,
 * of the initial h0, c0 on exit; dseq (T, B, U), the gradient of the output sequence, or
 * NULL. Writes dfeats rows [start, end) and the weight gradients dkernel (F, 4U), dbias
 * (4U), drk (U, 4U). The weight gradients run every few steps (dz_steps) on the dz rows
 * of those steps, still in the L2 cache (rows for all T steps would be megabytes written
 * to memory and read back). */
void lab_lstm_backward(int T, int B, int F, int U, const float *feats, const float *acts,
                       const float *hprev, const float *cprev, const float *dseq, float *dh,
                       float *dc, const float *kernel, const float *rk, int start, int end,
                       float *dfeats, float *dkernel, float *dbias, float *drk,
                       float *scratch) {
  (void)T;
  const Layout L = layout(U);
  const int G = 4 * U, Ur = (int)round16(U), Fr = (int)round16(F), chunk = dz_steps(B);
  float *dzb = aligned(scratch), *rkt = dzb + round16((chunk > 1 ? chunk : 2) * (long)B * G);
  float *kt = rkt + (size_t)G * Ur;
  float *wq = kt + (size_t)G * Fr, *dks = wq + 4 * G, *drks = dks + (size_t)F * G;
  float *dbs = drks + (size_t)U * G;
  memset(dkernel, 0, sizeof(float) * F * G);
  memset(dbias, 0, sizeof(float) * G);
  memset(drk, 0, sizeof(float) * U * G);
  if (end <= start) return;
  memset(rkt, 0, sizeof(float) * (size_t)G * (Ur + Fr + 4));
  memset(dks, 0, sizeof(float) * (size_t)(F + U + 1) * G);
  for (int q = 0; q < 4; q++)
    for (int u = 0; u < U; u++) {
      const int s = stored_col(&L, q, u), from = q * U + u;
      for (int k = 0; k < U; k++) rkt[(size_t)s * Ur + k] = rk[(size_t)k * G + from];
      for (int k = 0; k < F; k++) kt[(size_t)s * Fr + k] = kernel[(size_t)k * G + from];
    }
  for (int k = 0; k < G && L.tailv == 1; k++) /* the tail units' columns for accumulate_quads */
    for (int u = 0; u < L.t; u++) wq[(k / 4) * 16 + 4 * u + k % 4] = rkt[(size_t)k * Ur + 16 * L.ng + u];
  int pending = end; /* steps [t, pending) await their weight-gradient GEMMs */
  const float *dzn = NULL;
  for (int t = end - 1; t >= start; t--) {
    /* its rows in step order; the GEMM reads step t + 1's while step t's are written, so
     * one-step chunks alternate between two slots */
    float *dzt = dzb + (size_t)(chunk > 1 ? t - pending + chunk : t & 1) * B * G;
    Ahead ah = ahead(0, t > start ? acts + (size_t)(t - 1) * B * G : NULL, (size_t)B * G,
                     t > start ? cprev + (size_t)(t - 1) * B * U : NULL, (size_t)B * U,
                     t > start && dseq ? dseq + (size_t)(t - 1) * B * U : NULL, (size_t)B * U);
    bwd_step(&L, B, dzn ? G : 0, dzn, rkt, Ur, wq, dh, dseq ? dseq + (size_t)t * B * U : NULL,
             acts + (size_t)t * B * G, cprev + (size_t)t * B * U, dc, dzt, &ah);
    dzn = dzt;
    if (pending - t == chunk || t == start) { /* the weight gradients of the last few steps */
      weight_grads((pending - t) * B, F, U, dzt, feats + (size_t)t * B * F,
                   hprev + (size_t)t * B * U, kt, Fr, dfeats + (size_t)t * B * F, dks, drks,
                   dbs);
      pending = t;
    }
  }
  gemm(B, U, G, dzn, G, 1, rkt, Ur, dh, U, NULL, 0); /* the initial state's: dz @ rk^T */
  for (int q = 0; q < 4; q++) /* back to Keras's column order */
    for (int u = 0; u < U; u++) {
      const int s = stored_col(&L, q, u), to = q * U + u;
      for (int k = 0; k < F; k++) dkernel[(size_t)k * G + to] = dks[(size_t)k * G + s];
      for (int k = 0; k < U; k++) drk[(size_t)k * G + to] = drks[(size_t)k * G + s];
      dbias[to] = dbs[s];
    }
}

#else /* without AVX-512: plain loops, Keras's column order */
/* One row's step from its gate pre-activations s = [i, f, g, o] (g of the doubled
 * candidate), which become the gate sigmoids: c = f cp + i (2g - 1), h = o tanh(c). */
static void cell_row(int U, float *s, const float *cp, float *c, float *h) {
  float *i_ = s, *f_ = s + U, *g_ = s + 2 * U, *o_ = s + 3 * U;
  for (int n = 0; n < 4 * U; n++) s[n] = sigm(s[n]);
  for (int u = 0; u < U; u++) {
    const float cn = f_[u] * cp[u] + i_[u] * (2.0f * g_[u] - 1.0f);
    c[u] = cn;
    h[u] = o_[u] * (2.0f * sigm(2.0f * cn) - 1.0f);
  }
}

/* One row's backward step: from dh + ds (this step's output gradient: from the step
 * after, and from the output sequence where ds is not NULL), dc (in: the cell's gradient
 * from the step after; out: for the step before), the gate sigmoids a and the previous
 * cell cp, the pre-activation gradients dz = [di, df, dg, do]. */
static void cell_row_backward(int U, const float *a, const float *cp, const float *dh,
                              const float *ds, float *dc, float *dz) {
  const float *i_ = a, *f_ = a + U, *g_ = a + 2 * U, *o_ = a + 3 * U;
  for (int u = 0; u < U; u++) {
    const float dhv = ds ? dh[u] + ds[u] : dh[u], i = i_[u], f = f_[u], g = 2.0f * g_[u] - 1.0f, o = o_[u],
                cpv = cp[u];
    const float tc = 2.0f * sigm(2.0f * (f * cpv + i * g)) - 1.0f;
    const float dcv = dc[u] + dhv * o * (1.0f - tc * tc);
    dz[u] = dcv * g * i * (1.0f - i);
    dz[U + u] = dcv * cpv * f * (1.0f - f);
    dz[2 * U + u] = dcv * i * (1.0f - g * g) * 0.5f;
    dz[3 * U + u] = dhv * tc * o * (1.0f - o);
    dc[u] = dcv * f;
  }
}

static void transpose(int rows, int cols, const float *src, float *dst) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

long lab_lstm_forward_scratch(int F, int U) {
  (void)F, (void)U;
  return 16;
}

long lab_lstm_backward_scratch(int B, int F, int U) {
  return (long)dz_steps(B) * B * 4 * U + 4L * U * (U + F) + 16;
}

void lab_lstm_forward(int T, int B, int F, int U, const float *feats, const float *kernel,
                      const float *bias, const float *rk, int start, int end, float *acts,
                      float *hprev, float *cprev, float *h, float *c, float *scratch) {
  (void)T, (void)scratch;
  if (end <= start) return;
  const int G = 4 * U;
  const size_t BU = (size_t)B * U;
  const int chunk = dz_steps(B); /* steps per projection GEMM */
  memcpy(hprev + start * BU, h, sizeof(float) * BU);
  memcpy(cprev + start * BU, c, sizeof(float) * BU);
  for (int t = start; t < end; t++) {
    float *s = acts + (size_t)t * B * G;
    if ((t - start) % chunk == 0) { /* acts = bias + feats @ kernel for the next steps,
                                       just before they run (still in the L2 cache) */
      const int rows = (t + chunk < end ? chunk : end - t) * B;
      gemm(rows, G, F, feats + (size_t)t * B * F, F, 1, kernel, G, s, G, bias, 0);
    }
    const float *ht = hprev + t * BU, *ct = cprev + t * BU;
    float *hn = t + 1 < end ? hprev + (t + 1) * BU : h;
    float *cn = t + 1 < end ? cprev + (t + 1) * BU : c;
    gemm(B, G, U, ht, U, 1, rk, G, s, G, s, G);
    for (int r = 0; r < B; r++) cell_row(U, s + r * G, ct + r * U, cn + r * U, hn + r * U);
  }
}

void lab_lstm_backward(int T, int B, int F, int U, const float *feats, const float *acts,
                       const float *hprev, const float *cprev, const float *dseq, float *dh,
                       float *dc, const float *kernel, const float *rk, int start, int end,
                       float *dfeats, float *dkernel, float *dbias, float *drk,
                       float *scratch) {
  (void)T;
  const int chunk = dz_steps(B); /* steps per weight-gradient GEMM */
  float *dz = aligned(scratch), *rkt = dz + (size_t)chunk * B * 4 * U, *kt = rkt + 4 * U * U;
  const int G = 4 * U;
  memset(dkernel, 0, sizeof(float) * F * G);
  memset(dbias, 0, sizeof(float) * G);
  memset(drk, 0, sizeof(float) * U * G);
  if (end <= start) return;
  transpose(U, G, rk, rkt);
  transpose(F, G, kernel, kt);
  int pending = end; /* steps [t, pending) await them */
  for (int t = end - 1; t >= start; t--) {
    const float *a = acts + (size_t)t * B * G, *cp = cprev + (size_t)t * B * U;
    const float *ds = dseq ? dseq + (size_t)t * B * U : NULL;
    float *dzt = dz + (size_t)(t - pending + chunk) * B * G; /* its rows in step order */
    for (int r = 0; r < B; r++)
      cell_row_backward(U, a + r * G, cp + r * U, dh + r * U, ds ? ds + r * U : NULL,
                        dc + r * U, dzt + r * G);
    gemm(B, U, G, dzt, G, 1, rkt, U, dh, U, NULL, 0); /* dh = dz @ rk^T */
    if (pending - t == chunk || t == start) { /* the weight gradients of the last few
                                                 steps, while their dz is in the L2 cache */
      weight_grads((pending - t) * B, F, U, dzt, feats + (size_t)t * B * F,
                   hprev + (size_t)t * B * U, kt, F, dfeats + (size_t)t * B * F, dkernel, drk,
                   dbias);
      pending = t;
    }
  }
}
#endif

/* -- Conv1D('same', stride 1) + ReLU + MaxPooling1D(P, stride P), for the CNN + LSTM ------
 *
 * e (B, L, E): a batch's embedded codes; kernel (K, E, C), bias (C); the convolution reads
 * pl zero rows before each row's codes and pr after (TensorFlow's 'same' for the window).
 * The pooled output is time-major, (T, B, C) with T = (L + pl + pr - K + 1) / P, as the
 * LSTM reads it. Both passes are GEMMs on the padded row itself: row n of the unfolded
 * input (the K rows of x from n on) is K * E contiguous floats, so no im2col copy. */

static int conv_steps(int L, int K, int pl, int pr, int P) {
  const int n = L + pl + pr - K + 1;
  return n > 0 ? n / P : 0;
}

/* xp = pl zero rows, row b of e, pr zero rows. */
static void padded_row(int L, int E, int pl, int pr, const float *e, float *xp) {
  memset(xp, 0, sizeof(float) * pl * E);
  memcpy(xp + (size_t)pl * E, e, sizeof(float) * L * E);
  memset(xp + (size_t)(pl + L) * E, 0, sizeof(float) * pr * E);
}

/* One pool window of the C channels: y (P rows of C), out = relu of the maximum, which =
 * its row (the first of equal values, as TensorFlow's MaxPoolGrad routes it); a NaN
 * stays NaN. */
static void pool_window(int C, int P, const float *y, float *out, unsigned char *which) {
#if defined(__AVX512F__)
  for (int c = 0; c < C; c += 16) {
    const __mmask16 m = lanes(C - c);
    __m512 best = _mm512_maskz_loadu_ps(m, y + c);
    __m512i arg = _mm512_setzero_si512();
    for (int j = 1; j < P; j++) {
      const __m512 v = _mm512_maskz_loadu_ps(m, y + (size_t)j * C + c);
      const __mmask16 more = _mm512_cmp_ps_mask(v, best, _CMP_NLE_UQ); /* larger, or NaN */
      best = _mm512_mask_mov_ps(best, more, v);
      arg = _mm512_mask_mov_epi32(arg, more, _mm512_set1_epi32(j));
    }
    const __mmask16 keep = _mm512_cmp_ps_mask(best, _mm512_setzero_ps(), _CMP_NLE_UQ);
    _mm512_mask_storeu_ps(out + c, m, _mm512_maskz_mov_ps(keep, best));
    _mm512_mask_cvtepi32_storeu_epi8(which + c, m, arg);
  }
#else
  for (int c = 0; c < C; c++) {
    float best = y[c];
    int arg = 0;
    for (int j = 1; j < P; j++) {
      const float v = y[(size_t)j * C + c];
      if (!(v <= best)) best = v, arg = j; /* larger, or NaN */
    }
    out[c] = best > 0.0f || best != best ? best : 0.0f;
    which[c] = (unsigned char)arg;
  }
#endif
}

/* Its gradient: dy (P rows of C) = dout in the row the maximum came from where out > 0,
 * else 0; dbias += the gradients passed. */
static void unpool_window(int C, int P, const float *out, const unsigned char *which,
                          const float *dout, float *dy, float *dbias) {
#if defined(__AVX512F__)
  for (int c = 0; c < C; c += 16) {
    const __mmask16 m = lanes(C - c);
    const __mmask16 pass = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, out + c),
                                                   _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 d = _mm512_maskz_loadu_ps(pass, dout + c);
    const __m512i w = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, which + c));
    _mm512_mask_storeu_ps(dbias + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dbias + c), d));
    for (int j = 0; j < P; j++)
      _mm512_mask_storeu_ps(dy + (size_t)j * C + c, m,
                            _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(w, _mm512_set1_epi32(j)), d));
  }
#else
  for (int c = 0; c < C; c++) {
    for (int j = 0; j < P; j++) dy[(size_t)j * C + c] = 0.0f;
    if (out[c] > 0.0f) {
      dy[(size_t)which[c] * C + c] = dout[c];
      dbias[c] += dout[c];
    }
  }
#endif
}

/* Scratch floats for either pass. */
long lab_conv_pool_scratch(int L, int E, int K, int C, int pl, int pr) {
  const long Lp = (long)L + pl + pr;
  return Lp * E + (Lp + K) * C + (long)K * C * E;
}

/* out = max over each pool window of relu(conv(e)), time-major; which = the window slot it
 * came from (the first of equal values, as TensorFlow's MaxPoolGrad routes it). A NaN
 * stays NaN. */
void lab_conv_pool_forward(int B, int L, int E, int K, int C, int pl, int pr, int P,
                           const float *e, const float *kernel, const float *bias,
                           float *out, unsigned char *which, float *scratch) {
  const int T = conv_steps(L, K, pl, pr, P);
  if (T == 0) return;
  float *xp = scratch, *y = scratch + (size_t)(L + pl + pr) * E;
  for (int b = 0; b < B; b++) {
    padded_row(L, E, pl, pr, e + (size_t)b * L * E, xp);
    gemm(T * P, C, K * E, xp, E, 1, kernel, C, y, C, bias, 0); /* y = bias + conv */
    for (int t = 0; t < T; t++) {
      const size_t at = ((size_t)t * B + b) * C;
      if (b + 1 < B) { /* the next row's windows: a page apart, not prefetched by the CPU */
        __builtin_prefetch(out + at + C, 1, 3);
        __builtin_prefetch(which + at + C, 1, 3);
      }
      pool_window(C, P, y + (size_t)t * P * C, out + at, which + at);
    }
  }
}

/* The gradients of lab_conv_pool_forward from dout (T, B, C): de (B, L, E), dkernel
 * (K, E, C), dbias (C). The ReLU passes a gradient where out > 0. */
void lab_conv_pool_backward(int B, int L, int E, int K, int C, int pl, int pr, int P,
                            const float *e, const float *kernel, const float *out,
                            const unsigned char *which, const float *dout, float *de,
                            float *dkernel, float *dbias, float *scratch) {
  const int T = conv_steps(L, K, pl, pr, P), Lp = L + pl + pr;
  memset(dkernel, 0, sizeof(float) * K * E * C);
  memset(dbias, 0, sizeof(float) * C);
  if (T == 0) {
    memset(de, 0, sizeof(float) * B * L * E);
    return;
  }
  /* dypad: the conv outputs' gradient dy after K - 1 zero rows, zeros after; wrev: the
   * kernel with taps reversed, (K, C, E), so that the input gradient of padded row m is
   * dypad rows m .. m + K - 1 (contiguous) times wrev. */
  float *xp = scratch, *dypad = scratch + (size_t)Lp * E, *wrev = dypad + (size_t)(Lp + K) * C;
  float *dy = dypad + (size_t)(K - 1) * C;
  for (int j = 0; j < K; j++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < E; i++)
        wrev[((size_t)j * C + c) * E + i] = kernel[((size_t)(K - 1 - j) * E + i) * C + c];
  for (int b = 0; b < B; b++) {
    padded_row(L, E, pl, pr, e + (size_t)b * L * E, xp);
    memset(dypad, 0, sizeof(float) * (K - 1) * C); /* unpool_window writes rows [0, T P) */
    memset(dy + (size_t)T * P * C, 0, sizeof(float) * (Lp + 1 - T * P) * C);
    for (int t = 0; t < T; t++) {
      const size_t at = ((size_t)t * B + b) * C;
      if (b + 1 < B) { /* as in the forward pass */
        __builtin_prefetch(out + at + C, 0, 3);
        __builtin_prefetch(dout + at + C, 0, 3);
        __builtin_prefetch(which + at + C, 0, 3);
      }
      unpool_window(C, P, out + at, which + at, dout + at, dy + (size_t)t * P * C, dbias);
    }
    /* dkernel += unfold(xp)^T dy: row (k, i) of the transposed unfolding, step n, is
     * xp[n * E + k * E + i] */
    gemm(K * E, C, T * P, xp, 1, E, dy, C, dkernel, C, dkernel, C);
    /* de rows: padded rows pl .. pl + L - 1 */
    gemm(L, E, K * C, dypad + (size_t)pl * C, C, 1, wrev, E, de + (size_t)b * L * E, E, NULL, 0);
  }
}

/* -- The embedding gradient's two sums, for Keras's Adam (core/fast/engine.py) -------------
 *
 * For the rows r in [begin, end): sum[r - begin] += the rows i of values with idx[i] = r,
 * sumsq[r - begin] += their squares, each added in order of i (slices of other rows are
 * skipped): what TensorFlow's UnsortedSegmentSum makes of the gradient's slices and of
 * their squares (Keras 3's Adam densifies both), in one pass and with the same roundings
 * (each square rounded before it is added: no FMA contraction). The caller zeroes sum and
 * sumsq once and may then add several arrays of slices, in their order; it checks idx
 * (0 <= idx[i] < the table's rows). */
__attribute__((optimize("fp-contract=off"))) void lab_segment_sums(
    long n, int E, long begin, long end, const int *idx, const float *values, float *sum,
    float *sumsq) {
  for (long i = 0; i < n; i++) {
    if (idx[i] < begin || idx[i] >= end) continue;
    const float *restrict v = values + (size_t)i * E;
    float *restrict s = sum + (size_t)(idx[i] - begin) * E,
                    *restrict q = sumsq + (size_t)(idx[i] - begin) * E;
#if defined(__AVX512F__)
    for (int j = 0; j < E; j += 16) {
      const __mmask16 m = lanes(E - j);
      const __m512 x = _mm512_maskz_loadu_ps(m, v + j);
      _mm512_mask_storeu_ps(s + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, s + j), x));
      _mm512_mask_storeu_ps(q + j, m,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, q + j), _mm512_mul_ps(x, x)));
    }
#else
    for (int j = 0; j < E; j++) {
      const float x = v[j], xx = x * x;
      s[j] += x;
      q[j] += xx;
    }
#endif
  }
}

/* The rest of Keras's Adam step, elementwise over n floats, with the roundings of its
 * separate TensorFlow ops (keras/src/optimizers/adam.py): from the gradient's sum and sum
 * of squares (lab_segment_sums; for a dense gradient, itself and its rounded square),
 *   m_out = m + (sum - m) * c1,  v_out = v + (sumsq - v) * c2,
 *   var_out = var - (m_out * alpha) / (sqrt(v_out) + eps),
 * each operation rounded on its own (no FMA contraction; IEEE sqrt and division). Each
 * element is read before it is written, so an output may share its input's memory (or
 * sum's, or sumsq's). */
__attribute__((optimize("fp-contract=off"))) void lab_adam_rows(
    long n, const float *m, const float *v, const float *var, const float *sum,
    const float *sumsq, float alpha, float c1, float c2, float eps, float *m_out,
    float *v_out, float *var_out) {
  long i = 0;
#if defined(__AVX512F__)
  const __m512 a = _mm512_set1_ps(alpha), k1 = _mm512_set1_ps(c1), k2 = _mm512_set1_ps(c2),
               e = _mm512_set1_ps(eps);
  for (; i + 16 <= n; i += 16) {
    const __m512 m0 = _mm512_loadu_ps(m + i), v0 = _mm512_loadu_ps(v + i);
    const __m512 m1 = _mm512_add_ps(m0, _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(sum + i), m0), k1));
    const __m512 v1 = _mm512_add_ps(v0, _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(sumsq + i), v0), k2));
    const __m512 w1 = _mm512_sub_ps(_mm512_loadu_ps(var + i),
                                    _mm512_div_ps(_mm512_mul_ps(m1, a),
                                                  _mm512_add_ps(_mm512_sqrt_ps(v1), e)));
    _mm512_storeu_ps(m_out + i, m1);
    _mm512_storeu_ps(v_out + i, v1);
    _mm512_storeu_ps(var_out + i, w1);
  }
#endif
  for (; i < n; i++) {
    const float m1 = m[i] + (sum[i] - m[i]) * c1, v1 = v[i] + (sumsq[i] - v[i]) * c2;
    const float w1 = var[i] - (m1 * alpha) / (sqrtf(v1) + eps);
    m_out[i] = m1;
    v_out[i] = v1;
    var_out[i] = w1;
  }
}
