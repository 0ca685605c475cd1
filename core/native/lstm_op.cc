// TensorFlow ops around lstm_kernels.c: LabLstmForward and LabLstmBackward (see there
// and core/native.py), LabConvPool and its gradient, and LabEmbeddingAdam and LabAdam. Each op runs on
// one core; core/fast.py runs a batch's halves as two ops that TensorFlow executes
// concurrently.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

extern "C" {
void lab_lstm_forward(int T, int B, int F, int U, const float *feats, const float *kernel,
                      const float *bias, const float *rk, int start, int end, float *acts,
                      float *hprev, float *cprev, float *h, float *c, float *scratch);
void lab_lstm_backward(int T, int B, int F, int U, const float *feats, const float *acts,
                       const float *hprev, const float *cprev, const float *dseq, float *dh,
                       float *dc, const float *kernel, const float *rk, int start, int end,
                       float *dfeats, float *dkernel, float *dbias, float *drk,
                       float *scratch);
long lab_lstm_forward_scratch(int F, int U);
long lab_lstm_backward_scratch(int B, int F, int U);
long lab_conv_pool_scratch(int L, int E, int K, int C, int pl, int pr);
void lab_conv_pool_forward(int B, int L, int E, int K, int C, int pl, int pr, int P,
                           const float *e, const float *kernel, const float *bias,
                           float *out, unsigned char *which, float *scratch);
void lab_conv_pool_backward(int B, int L, int E, int K, int C, int pl, int pr, int P,
                            const float *e, const float *kernel, const float *out,
                            const unsigned char *which, const float *dout, float *de,
                            float *dkernel, float *dbias, float *scratch);
void lab_segment_sums(long n, int E, long begin, long end, const int *idx,
                      const float *values, float *sum, float *sumsq);
void lab_adam_rows(long n, const float *m, const float *v, const float *var, const float *sum,
                   const float *sumsq, float alpha, float c1, float c2, float eps,
                   float *m_out, float *v_out, float *var_out);
}

namespace {

// CPU time spent inside these ops, all threads (bench/kernel_speed.py compares it with a
// training epoch's): two clock reads per op call, microseconds against its milliseconds.
std::atomic<int64_t> cpu_ns{0};

int64_t ThreadCpuNs() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec;
}

struct CpuTimer {
  int64_t start = ThreadCpuNs();
  ~CpuTimer() { cpu_ns += ThreadCpuNs() - start; }
};

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Zero the rows of a (T, row) array outside [start, end) (0 <= start <= end <= T: ReadRange).
void ZeroOutside(float *p, int64_t T, int64_t row, int64_t start, int64_t end) {
  std::memset(p, 0, sizeof(float) * row * start);
  std::memset(p + row * end, 0, sizeof(float) * row * (T - end));
}

float *F32(Tensor *t) { return t->flat<float>().data(); }
const float *F32(const Tensor &t) { return t.flat<float>().data(); }

// Every input is checked before a byte is read or written: the kernels trust their sizes,
// so a wrong call would otherwise read or write out of bounds (or abort the process).
absl::Status Expect(const char *op, const char *name, const Tensor &t,
                    const TensorShape &want, const char *meaning) {
  if (t.shape() == want) return absl::OkStatus();
  return ::tensorflow::errors::InvalidArgument(op, ": ", name, " must have shape ",
                                               want.DebugString(), " (", meaning, "), got ",
                                               t.shape().DebugString());
}

// The sizes both ops share, and the step range [start, end), 0 <= start <= end <= T.
struct Steps {
  int T, B, F, U, start, end;
};

// The sizes from feats (T, B, F) and a state (B, U), each checked to fit the kernels' int
// indexing (T * B * 4U and the weight matrices).
absl::Status ReadSizes(const char *op, const Tensor &feats, const char *state_name,
                       const Tensor &state, Steps *s) {
  using ::tensorflow::errors::InvalidArgument;
  if (feats.dims() != 3)
    return InvalidArgument(op, ": feats must have rank 3 (steps, batch, features), got ",
                           feats.shape().DebugString());
  if (state.dims() != 2 || state.dim_size(0) != feats.dim_size(1))
    return InvalidArgument(op, ": ", state_name, " must have shape [", feats.dim_size(1),
                           ",units] (batch as feats), got ", state.shape().DebugString());
  const int64_t T = feats.dim_size(0), B = feats.dim_size(1), F = feats.dim_size(2),
                U = state.dim_size(1);
  const double limit = std::numeric_limits<int>::max(), G = 4.0 * U;  // no int64 overflow
  if (double(T) * B * std::max<double>(F, G) > limit || F * G > limit || U * G > limit ||
      std::max({T, B, F}) > limit)
    return InvalidArgument(op, ": sizes too large for the kernels' int indexing");
  *s = {static_cast<int>(T), static_cast<int>(B), static_cast<int>(F), static_cast<int>(U),
        0, 0};
  return absl::OkStatus();
}

// The weights both ops read: kernel (F, 4U), recurrent kernel (U, 4U).
absl::Status CheckWeights(const char *op, const Steps &s, const Tensor &kernel,
                          const Tensor &rk) {
  TF_RETURN_IF_ERROR(Expect(op, "kernel", kernel, TensorShape({s.F, 4 * s.U}),
                            "features, 4 * units"));
  return Expect(op, "rk", rk, TensorShape({s.U, 4 * s.U}), "units, 4 * units");
}

// start and end (inputs ``first``, ``first + 1``): int32 scalars with 0 <= start <= end <= T.
absl::Status ReadRange(const char *op, OpKernelContext *ctx, int first, Steps *s) {
  using ::tensorflow::errors::InvalidArgument;
  const Tensor &start = ctx->input(first), &end = ctx->input(first + 1);
  if (!TensorShapeUtils::IsScalar(start.shape()) || !TensorShapeUtils::IsScalar(end.shape()))
    return InvalidArgument(op, ": start and end must be scalars, got ",
                           start.shape().DebugString(), " and ", end.shape().DebugString());
  s->start = start.scalar<int32_t>()();
  s->end = end.scalar<int32_t>()();
  if (s->start < 0 || s->start > s->end || s->end > s->T)
    return InvalidArgument(op, ": need 0 <= start <= end <= steps (", s->T, "), got start ",
                           s->start, ", end ", s->end);
  return absl::OkStatus();
}

class LstmForwardOp : public OpKernel {
 public:
  explicit LstmForwardOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const CpuTimer timer;
    const char *op = "LabLstmForward";
    const Tensor &feats = ctx->input(0), &h0 = ctx->input(1), &c0 = ctx->input(2),
                 &kernel = ctx->input(3), &bias = ctx->input(4), &rk = ctx->input(5);
    Steps s;
    OP_REQUIRES_OK(ctx, ReadSizes(op, feats, "h0", h0, &s));
    OP_REQUIRES_OK(ctx, Expect(op, "c0", c0, h0.shape(), "batch, units as h0"));
    OP_REQUIRES_OK(ctx, CheckWeights(op, s, kernel, rk));
    OP_REQUIRES_OK(ctx, Expect(op, "bias", bias, TensorShape({4 * s.U}), "4 * units"));
    OP_REQUIRES_OK(ctx, ReadRange(op, ctx, 6, &s));
    const auto [T, B, F, U, start, end] = s;
    Tensor *acts, *hprev, *cprev, *h, *c;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({T, B, 4 * U}), &acts));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({T, B, U}), &hprev));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({T, B, U}), &cprev));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, h0.shape(), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, c0.shape(), &c));
    ZeroOutside(F32(acts), T, int64_t{B} * 4 * U, start, end);
    ZeroOutside(F32(hprev), T, int64_t{B} * U, start, end);
    ZeroOutside(F32(cprev), T, int64_t{B} * U, start, end);
    std::memcpy(F32(h), F32(h0), sizeof(float) * B * U);
    std::memcpy(F32(c), F32(c0), sizeof(float) * B * U);
    Tensor scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({lab_lstm_forward_scratch(F, U)}),
                                           &scratch));
    lab_lstm_forward(T, B, F, U, F32(feats), F32(kernel), F32(bias), F32(rk), start, end,
                     F32(acts), F32(hprev), F32(cprev), F32(h), F32(c), F32(&scratch));
  }
};

class LstmBackwardOp : public OpKernel {
 public:
  explicit LstmBackwardOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const CpuTimer timer;
    const char *op = "LabLstmBackward";
    const Tensor &feats = ctx->input(0), &acts = ctx->input(1), &hprev = ctx->input(2),
                 &cprev = ctx->input(3), &dseq = ctx->input(4), &dh = ctx->input(5),
                 &dc = ctx->input(6), &kernel = ctx->input(7), &rk = ctx->input(8);
    Steps s;
    OP_REQUIRES_OK(ctx, ReadSizes(op, feats, "dh", dh, &s));
    OP_REQUIRES_OK(ctx, Expect(op, "dc", dc, dh.shape(), "batch, units as dh"));
    OP_REQUIRES_OK(ctx, CheckWeights(op, s, kernel, rk));
    const TensorShape seq({s.T, s.B, s.U});
    OP_REQUIRES_OK(ctx, Expect(op, "acts", acts, TensorShape({s.T, s.B, 4 * s.U}),
                               "steps, batch, 4 * units"));
    OP_REQUIRES_OK(ctx, Expect(op, "hprev", hprev, seq, "steps, batch, units"));
    OP_REQUIRES_OK(ctx, Expect(op, "cprev", cprev, seq, "steps, batch, units"));
    const bool no_dseq = dseq.shape() == TensorShape({0});  // a last layer's: no sequence
    if (!no_dseq)
      OP_REQUIRES_OK(ctx, Expect(op, "dseq", dseq, seq, "steps, batch, units; or [0]"));
    OP_REQUIRES_OK(ctx, ReadRange(op, ctx, 9, &s));
    const auto [T, B, F, U, start, end] = s;
    Tensor *dfeats, *dh0, *dc0, *dkernel, *dbias, *drk;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, feats.shape(), &dfeats));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, dh.shape(), &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, dc.shape(), &dc0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({4 * U}), &dbias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, rk.shape(), &drk));
    Tensor scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({lab_lstm_backward_scratch(B, F, U)}),
                                           &scratch));
    ZeroOutside(F32(dfeats), T, int64_t{B} * F, start, end);
    std::memcpy(F32(dh0), F32(dh), sizeof(float) * B * U);
    std::memcpy(F32(dc0), F32(dc), sizeof(float) * B * U);
    lab_lstm_backward(T, B, F, U, F32(feats), F32(acts), F32(hprev), F32(cprev),
                      no_dseq ? nullptr : F32(dseq), F32(dh0), F32(dc0),
                      F32(kernel), F32(rk), start, end, F32(dfeats), F32(dkernel),
                      F32(dbias), F32(drk), F32(&scratch));
  }
};

// Conv1D + ReLU + MaxPooling1D (see lab_conv_pool_forward): the sizes from e (B, L, E) and
// kernel (K, E, C), and the int32 scalars pad_left, pad_right, pool at inputs first..first+2.
struct ConvSizes {
  int B, L, E, K, C, pl, pr, P, T;
};

absl::Status ReadConv(const char *op, OpKernelContext *ctx, const Tensor &e,
                      const Tensor &kernel, int first, ConvSizes *s) {
  using ::tensorflow::errors::InvalidArgument;
  if (e.dims() != 3 || kernel.dims() != 3 || kernel.dim_size(1) != e.dim_size(2))
    return InvalidArgument(op, ": need e (batch, length, features) and kernel (taps, "
                           "features, filters), got ", e.shape().DebugString(), " and ",
                           kernel.shape().DebugString());
  int32_t v[3];
  for (int i = 0; i < 3; i++) {
    const Tensor &t = ctx->input(first + i);
    if (!TensorShapeUtils::IsScalar(t.shape()))
      return InvalidArgument(op, ": pad_left, pad_right and pool must be scalars");
    v[i] = t.scalar<int32_t>()();
  }
  const int64_t limit = 1 << 24;
  if (v[0] < 0 || v[1] < 0 || v[2] < 1 || v[2] > 255 || v[0] > limit || v[1] > limit ||
      e.dim_size(0) > limit || e.dim_size(1) > limit || e.dim_size(2) > 4096 ||
      kernel.dim_size(0) > 64 || kernel.dim_size(2) > 4096 || kernel.dim_size(0) < 1 ||
      e.NumElements() > std::numeric_limits<int>::max())
    return InvalidArgument(op, ": sizes out of range (pad_left ", v[0], ", pad_right ", v[1],
                           ", pool ", v[2], ")");
  *s = {static_cast<int>(e.dim_size(0)), static_cast<int>(e.dim_size(1)),
        static_cast<int>(e.dim_size(2)), static_cast<int>(kernel.dim_size(0)),
        static_cast<int>(kernel.dim_size(2)), v[0], v[1], v[2], 0};
  const int n = s->L + s->pl + s->pr - s->K + 1;
  s->T = n > 0 ? n / s->P : 0;
  return absl::OkStatus();
}

class ConvPoolOp : public OpKernel {
 public:
  explicit ConvPoolOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const CpuTimer timer;
    const char *op = "LabConvPool";
    const Tensor &e = ctx->input(0), &kernel = ctx->input(1), &bias = ctx->input(2);
    ConvSizes s;
    OP_REQUIRES_OK(ctx, ReadConv(op, ctx, e, kernel, 3, &s));
    OP_REQUIRES_OK(ctx, Expect(op, "bias", bias, TensorShape({s.C}), "filters"));
    Tensor *out, *which, scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s.T, s.B, s.C}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({s.T, s.B, s.C}), &which));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
        tensorflow::DT_FLOAT,
        TensorShape({lab_conv_pool_scratch(s.L, s.E, s.K, s.C, s.pl, s.pr)}), &scratch));
    lab_conv_pool_forward(s.B, s.L, s.E, s.K, s.C, s.pl, s.pr, s.P, F32(e), F32(kernel),
                          F32(bias), F32(out), which->flat<uint8_t>().data(), F32(&scratch));
  }
};

class ConvPoolGradOp : public OpKernel {
 public:
  explicit ConvPoolGradOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const CpuTimer timer;
    const char *op = "LabConvPoolGrad";
    const Tensor &e = ctx->input(0), &kernel = ctx->input(1), &out = ctx->input(2),
                 &which = ctx->input(3), &dout = ctx->input(4);
    ConvSizes s;
    OP_REQUIRES_OK(ctx, ReadConv(op, ctx, e, kernel, 5, &s));
    const TensorShape pooled({s.T, s.B, s.C});
    OP_REQUIRES_OK(ctx, Expect(op, "out", out, pooled, "steps, batch, filters"));
    OP_REQUIRES_OK(ctx, Expect(op, "which", which, pooled, "steps, batch, filters"));
    OP_REQUIRES_OK(ctx, Expect(op, "dout", dout, pooled, "steps, batch, filters"));
    Tensor *de, *dkernel, *dbias, scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, e.shape(), &de));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({s.C}), &dbias));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
        tensorflow::DT_FLOAT,
        TensorShape({lab_conv_pool_scratch(s.L, s.E, s.K, s.C, s.pl, s.pr)}), &scratch));
    lab_conv_pool_backward(s.B, s.L, s.E, s.K, s.C, s.pl, s.pr, s.P, F32(e), F32(kernel),
                           F32(out), which.flat<uint8_t>().data(), F32(dout), F32(de),
                           F32(dkernel), F32(dbias), F32(&scratch));
  }
};

// What both Adam ops share: m, v and var at inputs first .. first + 2 (m and v shaped as
// var), then Adam's scalars alpha (Keras's lr * sqrt(1 - b2^t) / (1 - b1^t)),
// c1 = 1 - beta_1, c2 = 1 - beta_2 and eps; outputs the new m, v and var, each in its
// input's memory where TensorFlow can hand that over (an earlier op's output that
// nothing else reads), else in a new buffer. StartAdam checks and reads them and makes
// the outputs; FinishAdam makes the step on ``n`` floats from ``offset`` (lab_adam_rows)
// from the gradient's sum and sum of squares there.
struct AdamIo {
  const Tensor *m, *v, *var;
  float scalars[4];
  Tensor *m_out, *v_out, *var_out;
};

absl::Status StartAdam(const char *op, OpKernelContext *ctx, int first, AdamIo *io) {
  io->m = &ctx->input(first);
  io->v = &ctx->input(first + 1);
  io->var = &ctx->input(first + 2);
  const TensorShape &shape = io->var->shape();
  TF_RETURN_IF_ERROR(Expect(op, "m", *io->m, shape, "as var"));
  TF_RETURN_IF_ERROR(Expect(op, "v", *io->v, shape, "as var"));
  for (int k = 0; k < 4; k++) {
    const Tensor &t = ctx->input(first + 3 + k);
    if (!TensorShapeUtils::IsScalar(t.shape()))
      return ::tensorflow::errors::InvalidArgument(
          op, ": alpha, c1, c2 and eps must be scalars, got ", t.shape().DebugString());
    io->scalars[k] = t.scalar<float>()();
  }
  Tensor **outs[3] = {&io->m_out, &io->v_out, &io->var_out};
  for (int j = 0; j < 3; j++)
    TF_RETURN_IF_ERROR(ctx->forward_input_or_allocate_output({first + j}, j, shape, outs[j]));
  return absl::OkStatus();
}

void FinishAdam(const AdamIo &io, int64_t offset, int64_t n, const float *sum,
                const float *sumsq) {
  lab_adam_rows(n, F32(*io.m) + offset, F32(*io.v) + offset, F32(*io.var) + offset, sum,
                sumsq, io.scalars[0], io.scalars[1], io.scalars[2], io.scalars[3],
                F32(io.m_out) + offset, F32(io.v_out) + offset, F32(io.var_out) + offset);
}

// Keras's Adam step for rows [begin, end) of an embedding table var (rows, E) (end -1: to
// the last row) from its gradient's slices, given as N arrays of slices (values[k] (n_k,
// E), indices[k] (n_k)), then StartAdam's inputs: the slices of those rows summed per row
// and, apart, their squares, in the order given (as Keras's Adam densifies both, with
// TensorFlow's UnsortedSegmentSum over the slices concatenated), then its elementwise
// updates of m, v and var in one pass. The other rows come out as they went in. So the
// engine can update the rows the batch's halves touched while the padding prefix's
// backward pass still runs, and row 0 (the padding code) after it.
class EmbeddingAdamOp : public OpKernel {
 public:
  explicit EmbeddingAdamOp(OpKernelConstruction *ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("begin", &begin_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("end", &end_));
  }
  void Compute(OpKernelContext *ctx) override {
    using ::tensorflow::errors::InvalidArgument;
    const char *op = "LabEmbeddingAdam";  // not timed: cpu_ns counts the layers' ops
    ::tensorflow::OpInputList values, indices;
    OP_REQUIRES_OK(ctx, ctx->input_list("values", &values));
    OP_REQUIRES_OK(ctx, ctx->input_list("indices", &indices));
    const int parts = values.size();
    const Tensor &var = ctx->input(2 * parts + 2);
    OP_REQUIRES(ctx, var.dims() == 2 && var.dim_size(1) <= std::numeric_limits<int>::max(),
                InvalidArgument(op, ": var must be a table (rows, width), got ",
                                var.shape().DebugString()));
    const int64_t rows = var.dim_size(0), E = var.dim_size(1);
    const int64_t begin = begin_, end = end_ < 0 ? rows : end_;
    OP_REQUIRES(ctx, 0 <= begin && begin <= end && end <= rows,
                InvalidArgument(op, ": need 0 <= begin <= end <= rows (", rows, "), got begin ",
                                begin, ", end ", end));
    for (int k = 0; k < parts; k++) {
      OP_REQUIRES(ctx, values[k].dims() == 2 && values[k].dim_size(1) == E,
                  InvalidArgument(op, ": values must have shape [slices,", E, "], got ",
                                  values[k].shape().DebugString()));
      const int64_t n = values[k].dim_size(0);
      OP_REQUIRES_OK(ctx, Expect(op, "indices", indices[k], TensorShape({n}), "one per slice"));
      const int32_t *idx = indices[k].flat<int32_t>().data();
      for (int64_t i = 0; i < n; i++)
        OP_REQUIRES(ctx, idx[i] >= 0 && idx[i] < rows,
                    InvalidArgument(op, ": indices[", i, "] = ", idx[i], " is not in [0, ",
                                    rows, ")"));
    }
    AdamIo io;
    OP_REQUIRES_OK(ctx, StartAdam(op, ctx, 2 * parts, &io));
    // Rows outside [begin, end) as they came in (nothing to do for an input handed over).
    const Tensor *ins[3] = {io.m, io.v, io.var};
    Tensor *outs[3] = {io.m_out, io.v_out, io.var_out};
    for (int j = 0; j < 3; j++)
      if (!outs[j]->SharesBufferWith(*ins[j])) {
        std::memcpy(F32(outs[j]), F32(*ins[j]), sizeof(float) * begin * E);
        std::memcpy(F32(outs[j]) + end * E, F32(*ins[j]) + end * E,
                    sizeof(float) * (rows - end) * E);
      }
    Tensor sums;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({2, (end - begin) * E}), &sums));
    float *sum = F32(&sums), *sumsq = sum + (end - begin) * E;
    std::memset(sum, 0, sizeof(float) * 2 * (end - begin) * E);
    for (int k = 0; k < parts; k++)
      lab_segment_sums(values[k].dim_size(0), static_cast<int>(E), begin, end,
                       indices[k].flat<int32_t>().data(), F32(values[k]), sum, sumsq);
    FinishAdam(io, begin * E, (end - begin) * E, sum, sumsq);
  }

 private:
  int64_t begin_, end_;
};

// Keras's Adam step for any float32 variable var from its dense gradient grad (same shape;
// then StartAdam's inputs): as LabEmbeddingAdam with grad itself as the sum and its square
// (rounded) as the sum of squares, which is what Keras's ops make of a dense gradient.
class AdamOp : public OpKernel {
 public:
  explicit AdamOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const char *op = "LabAdam";
    const Tensor &grad = ctx->input(0), &var = ctx->input(3);
    OP_REQUIRES_OK(ctx, Expect(op, "grad", grad, var.shape(), "as var"));
    AdamIo io;
    OP_REQUIRES_OK(ctx, StartAdam(op, ctx, 1, &io));
    const int64_t n = var.NumElements();
    Tensor squares;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, var.shape(), &squares));
    const float *g = F32(grad);
    float *sumsq = F32(&squares);
    for (int64_t i = 0; i < n; i++) sumsq[i] = g[i] * g[i];
    FinishAdam(io, 0, n, g, sumsq);
  }
};

// Graph construction fails early (ValueError in Python) on an input of the wrong rank
// (-1: any); the kernels check every size again when they run.
absl::Status Ranks(InferenceContext *c, const std::vector<int> &ranks) {
  int i = 0;
  for (const int rank : ranks) {
    ShapeHandle unused;
    if (rank >= 0) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), rank, &unused));
    i++;
  }
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("LabLstmForward")
    .Input("feats: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("rk: float")
    .Input("start: int32")
    .Input("end: int32")
    .Output("acts: float")
    .Output("hprev: float")
    .Output("cprev: float")
    .Output("h: float")
    .Output("c: float")
    .SetShapeFn([](InferenceContext *c) {
      TF_RETURN_IF_ERROR(Ranks(c, {3, 2, 2, 2, 1, 2, 0, 0}));
      ShapeHandle feats = c->input(0), h0, acts, seq;
      TF_RETURN_IF_ERROR(c->Merge(c->input(1), c->input(2), &h0));  // h0 and c0 agree
      TF_RETURN_IF_ERROR(c->ReplaceDim(feats, 2, c->Dim(c->input(3), 1), &acts));
      TF_RETURN_IF_ERROR(c->ReplaceDim(feats, 2, c->Dim(h0, 1), &seq));
      c->set_output(0, acts);
      c->set_output(1, seq);
      c->set_output(2, seq);
      c->set_output(3, h0);
      c->set_output(4, h0);
      return absl::OkStatus();
    });

REGISTER_OP("LabLstmBackward")
    .Input("feats: float")
    .Input("acts: float")
    .Input("hprev: float")
    .Input("cprev: float")
    .Input("dseq: float")
    .Input("dh: float")
    .Input("dc: float")
    .Input("kernel: float")
    .Input("rk: float")
    .Input("start: int32")
    .Input("end: int32")
    .Output("dfeats: float")
    .Output("dh0: float")
    .Output("dc0: float")
    .Output("dkernel: float")
    .Output("dbias: float")
    .Output("drk: float")
    .SetShapeFn([](InferenceContext *c) {
      // dseq (input 4) is (steps, batch, units) or [0]: any rank.
      TF_RETURN_IF_ERROR(Ranks(c, {3, 3, 3, 3, -1, 2, 2, 2, 2, 0, 0}));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(5));
      c->set_output(2, c->input(6));
      c->set_output(3, c->input(7));
      c->set_output(4, c->Vector(c->Dim(c->input(7), 1)));
      c->set_output(5, c->input(8));
      return absl::OkStatus();
    });

REGISTER_OP("LabConvPool")
    .Input("e: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("pad_left: int32")
    .Input("pad_right: int32")
    .Input("pool: int32")
    .Output("out: float")
    .Output("which: uint8")
    .SetShapeFn([](InferenceContext *c) {
      TF_RETURN_IF_ERROR(Ranks(c, {3, 3, 1, 0, 0, 0}));
      ShapeHandle pooled = c->MakeShape({c->UnknownDim(), c->Dim(c->input(0), 0),
                                         c->Dim(c->input(1), 2)});
      c->set_output(0, pooled);
      c->set_output(1, pooled);
      return absl::OkStatus();
    });

REGISTER_OP("LabConvPoolGrad")
    .Input("e: float")
    .Input("kernel: float")
    .Input("out: float")
    .Input("which: uint8")
    .Input("dout: float")
    .Input("pad_left: int32")
    .Input("pad_right: int32")
    .Input("pool: int32")
    .Output("de: float")
    .Output("dkernel: float")
    .Output("dbias: float")
    .SetShapeFn([](InferenceContext *c) {
      TF_RETURN_IF_ERROR(Ranks(c, {3, 3, 3, 3, 3, 0, 0, 0}));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->Vector(c->Dim(c->input(1), 2)));
      return absl::OkStatus();
    });

REGISTER_OP("LabAdam")
    .Input("grad: float")
    .Input("m: float")
    .Input("v: float")
    .Input("var: float")
    .Input("alpha: float")
    .Input("c1: float")
    .Input("c2: float")
    .Input("eps: float")
    .Output("m_out: float")
    .Output("v_out: float")
    .Output("var_out: float")
    .SetShapeFn([](InferenceContext *c) {
      TF_RETURN_IF_ERROR(Ranks(c, {-1, -1, -1, -1, 0, 0, 0, 0}));
      for (int k = 0; k < 3; k++) c->set_output(k, c->input(3));
      return absl::OkStatus();
    });

REGISTER_OP("LabEmbeddingAdam")
    .Input("values: N * float")
    .Input("indices: N * int32")
    .Input("m: float")
    .Input("v: float")
    .Input("var: float")
    .Input("alpha: float")
    .Input("c1: float")
    .Input("c2: float")
    .Input("eps: float")
    .Output("m_out: float")
    .Output("v_out: float")
    .Output("var_out: float")
    .Attr("N: int >= 1")
    .Attr("begin: int = 0")
    .Attr("end: int = -1")
    .SetShapeFn([](InferenceContext *c) {
      int n;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      std::vector<int> ranks(n, 2);
      ranks.insert(ranks.end(), n, 1);
      ranks.insert(ranks.end(), {2, 2, 2, 0, 0, 0, 0});
      TF_RETURN_IF_ERROR(Ranks(c, ranks));
      for (int k = 0; k < 3; k++) c->set_output(k, c->input(2 * n + 2));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("LabConvPool").Device(tensorflow::DEVICE_CPU), ConvPoolOp);
REGISTER_KERNEL_BUILDER(Name("LabConvPoolGrad").Device(tensorflow::DEVICE_CPU), ConvPoolGradOp);
REGISTER_KERNEL_BUILDER(Name("LabLstmForward").Device(tensorflow::DEVICE_CPU), LstmForwardOp);
REGISTER_KERNEL_BUILDER(Name("LabLstmBackward").Device(tensorflow::DEVICE_CPU), LstmBackwardOp);
REGISTER_KERNEL_BUILDER(Name("LabEmbeddingAdam").Device(tensorflow::DEVICE_CPU), EmbeddingAdamOp);
REGISTER_KERNEL_BUILDER(Name("LabAdam").Device(tensorflow::DEVICE_CPU), AdamOp);

// Seconds of CPU time the ops above have taken in this process so far.
extern "C" double lab_native_cpu_seconds() { return 1e-9 * double(cpu_ns.load()); }
