/* The supernet's mixture quantizer on the CPU, one pass over the weight per call
 * (espnet_mpq.core.native builds and loads this file; espnet_mpq.core.fused documents the math).
 *
 * W (rows, cols) row-major float32; n candidates with q_i = qmax(b_i) (1 for the sign grid),
 * positive scales s (n, rows) and mixture weights g (n). Per element, for each candidate i:
 *
 *   x = W / s_i,  c = clamp(x, -q_i, q_i),  m_i = [x == c],  L_i = sign(c) (b_i = 1, sign(0) = +1)
 *   or round-half-to-even(c) (b_i >= 2)
 *
 *   forward:  out = sum_i (s_i g_i) L_i                              (accumulated in candidate order)
 *   backward: dW = dOut * sum_i g_i m_i
 *             levels_dot_i = sum_j dOut L_i,  clip_dot_i = sum_j m_i W dOut   (per row)
 *             ds_i = g_i (levels_dot_i - clip_dot_i / s_i)        (before the LSQ factor)
 *             dg_i = sum_rows s_i levels_dot_i
 *
 * The float operations per element are those of the eager candidate loop (build with
 * -ffp-contract=off): one candidate's values and dW are the same to the bit, a mixture's to
 * rounding. A row's sums run in float (vectorised: `omp simd reduction`) and are handed on in
 * double. Rows are shared out among OpenMP threads; the library links libgomp.so.1 by its soname,
 * so in a process where torch has loaded its own libgomp.so.1 both use that one runtime and its one
 * pool of threads. Every row's results are independent of the others and of the number of threads,
 * except dg, summed over rows.
 */
#include <math.h>
#include <stdint.h>

#define MAX_CANDIDATES 16

/* clamp(x, -q, q) as torch.clamp computes it (NaN stays NaN); fminf/fmaxf would not be inlined. */
static inline float clampf(float x, float q) { return x < -q ? -q : (x > q ? q : x); }

static inline float qmax_of(int32_t bits) { return bits == 1 ? 1.0f : (float)((1 << (bits - 1)) - 1); }

/* out[j] (+)= t * L(clamp(w[j] / s, -q, q)) for one row; the first candidate writes. */
static inline void forward_row(const float *restrict w, int64_t cols, float s, float t, float q, int one_bit, int first,
                               float *out) {
  if (first) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) {
      const float c = clampf(w[j] / s, q);
      out[j] = (one_bit ? (c >= 0.0f ? 1.0f : -1.0f) : rintf(c)) * t;
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) {
      const float c = clampf(w[j] / s, q);
      out[j] = out[j] + (one_bit ? (c >= 0.0f ? 1.0f : -1.0f) : rintf(c)) * t;
    }
  }
}

void mixture_forward(const float *w, const float *s, const float *g, const int32_t *bits, int64_t n,
                     int64_t rows, int64_t cols, float *out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      const float si = s[i * rows + r];
      forward_row(w + r * cols, cols, si, si * g[i], qmax_of(bits[i]), bits[i] == 1, i == 0, out + r * cols);
    }
  }
}

/* One candidate over one row: coef[j] (+)= g m_j; *levels_dot = sum_j dOut L, *clip_dot = sum_j m W dOut.
 * Four copies of the loop (first candidate or not, sign grid or not), each without branches. */
#define BACKWARD_LOOP(LEVEL, COEF)                                      \
  _Pragma("omp simd reduction(+ : ld, cd)")                              \
  for (int64_t j = 0; j < cols; ++j) {                                  \
    const float x = w[j] / s;                                           \
    const float c = clampf(x, q);                                       \
    const float inside = (float)(x == c);                               \
    ld += grad[j] * (LEVEL);                                            \
    cd += inside * (w[j] * grad[j]);                                    \
    coef[j] = (COEF);                                                   \
  }

static inline void backward_row(const float *restrict w, const float *restrict grad, int64_t cols, float s, float g,
                                float q, int one_bit, int first, float *restrict coef, double *levels_dot,
                                double *clip_dot) {
  float ld = 0.0f, cd = 0.0f;
  if (first && one_bit) {
    BACKWARD_LOOP(c >= 0.0f ? 1.0f : -1.0f, inside * g)
  } else if (first) {
    BACKWARD_LOOP(rintf(c), inside * g)
  } else if (one_bit) {
    BACKWARD_LOOP(c >= 0.0f ? 1.0f : -1.0f, coef[j] + inside * g)
  } else {
    BACKWARD_LOOP(rintf(c), coef[j] + inside * g)
  }
  *levels_dot = ld;
  *clip_dot = cd;
}

/* grad_s (n, rows) receives ds before the LSQ factor; grad_g (n) receives dg. */
void mixture_backward(const float *grad, const float *w, const float *s, const float *g, const int32_t *bits,
                      int64_t n, int64_t rows, int64_t cols, float *grad_w, float *grad_s, float *grad_g,
                      int threads) {
  double dg[MAX_CANDIDATES] = {0};
#pragma omp parallel num_threads(threads)
  {
    double dg_local[MAX_CANDIDATES] = {0};
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float *wr = w + r * cols, *gr = grad + r * cols;
      float *coef = grad_w + r * cols; /* sum_i g_i m_i, then times dOut */
      for (int64_t i = 0; i < n; ++i) {
        const float si = s[i * rows + r];
        double levels_dot, clip_dot;
        backward_row(wr, gr, cols, si, g[i], qmax_of(bits[i]), bits[i] == 1, i == 0, coef, &levels_dot, &clip_dot);
        grad_s[i * rows + r] = (float)(g[i] * (levels_dot - clip_dot / si));
        dg_local[i] += levels_dot * si;
      }
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) coef[j] = coef[j] * gr[j];
    }
#pragma omp critical
    for (int64_t i = 0; i < n; ++i) dg[i] += dg_local[i];
  }
  for (int64_t i = 0; i < n; ++i) grad_g[i] = (float)dg[i];
}
