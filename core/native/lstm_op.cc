// TensorFlow ops around lstm_kernels.c: LabLstmForward and LabLstmBackward (see there
// and core/native.py). Each op runs on one core; core/fast.py runs a batch's halves as
// two ops that TensorFlow executes concurrently.
#include <algorithm>
#include <cstring>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

extern "C" {
void lab_lstm_forward(int T, int B, int F, int U, const float *feats, const float *kernel,
                      const float *bias, const float *rk, int start, int end, float *acts,
                      float *hprev, float *cprev, float *h, float *c);
void lab_lstm_backward(int T, int B, int F, int U, const float *feats, const float *acts,
                       const float *hprev, const float *cprev, const float *dseq, float *dh,
                       float *dc, const float *kernel, const float *rk, int start, int end,
                       float *dfeats, float *dkernel, float *dbias, float *drk, float *dz,
                       float *rkt, float *kt);
}

namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Zero the rows of a (T, row) array outside [start, end).
void ZeroOutside(float *p, int64_t T, int64_t row, int start, int end) {
  const int64_t s = std::clamp<int64_t>(start, 0, T), e = std::clamp<int64_t>(end, s, T);
  std::memset(p, 0, sizeof(float) * row * s);
  std::memset(p + row * e, 0, sizeof(float) * row * (T - e));
}

float *F32(Tensor *t) { return t->flat<float>().data(); }
const float *F32(const Tensor &t) { return t.flat<float>().data(); }

bool ValidShapes(OpKernelContext *ctx, const Tensor &feats, const Tensor &h, const Tensor &k,
                 const Tensor &rk) {
  const bool ok = feats.dims() == 3 && h.dims() == 2 && k.dims() == 2 && rk.dims() == 2 &&
                  h.dim_size(0) == feats.dim_size(1) && k.dim_size(0) == feats.dim_size(2) &&
                  rk.dim_size(0) == h.dim_size(1) && k.dim_size(1) == 4 * h.dim_size(1) &&
                  rk.dim_size(1) == 4 * h.dim_size(1);
  if (!ok) ctx->CtxFailure(absl::InvalidArgumentError("LabLstm: inconsistent shapes"));
  return ok;
}

// The sizes both ops share, and the step range [start, end) clamped into [0, T].
struct Steps {
  int T, B, F, U, start, end;
};

Steps ReadSteps(OpKernelContext *ctx, const Tensor &feats, const Tensor &state, int first) {
  const int T = feats.dim_size(0);
  const int start = std::clamp(ctx->input(first).scalar<int32_t>()(), 0, T);
  const int end = std::clamp(ctx->input(first + 1).scalar<int32_t>()(), start, T);
  return {T, static_cast<int>(feats.dim_size(1)), static_cast<int>(feats.dim_size(2)),
          static_cast<int>(state.dim_size(1)), start, end};
}

class LstmForwardOp : public OpKernel {
 public:
  explicit LstmForwardOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const Tensor &feats = ctx->input(0), &h0 = ctx->input(1), &c0 = ctx->input(2),
                 &kernel = ctx->input(3), &bias = ctx->input(4), &rk = ctx->input(5);
    if (!ValidShapes(ctx, feats, h0, kernel, rk)) return;
    const auto [T, B, F, U, start, end] = ReadSteps(ctx, feats, h0, 6);
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
    lab_lstm_forward(T, B, F, U, F32(feats), F32(kernel), F32(bias), F32(rk), start, end,
                     F32(acts), F32(hprev), F32(cprev), F32(h), F32(c));
  }
};

class LstmBackwardOp : public OpKernel {
 public:
  explicit LstmBackwardOp(OpKernelConstruction *ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext *ctx) override {
    const Tensor &feats = ctx->input(0), &acts = ctx->input(1), &hprev = ctx->input(2),
                 &cprev = ctx->input(3), &dseq = ctx->input(4), &dh = ctx->input(5),
                 &dc = ctx->input(6), &kernel = ctx->input(7), &rk = ctx->input(8);
    if (!ValidShapes(ctx, feats, dh, kernel, rk)) return;
    const auto [T, B, F, U, start, end] = ReadSteps(ctx, feats, dh, 9);
    Tensor *dfeats, *dh0, *dc0, *dkernel, *dbias, *drk;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, feats.shape(), &dfeats));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, dh.shape(), &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, dc.shape(), &dc0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({4 * U}), &dbias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, rk.shape(), &drk));
    Tensor dz, rkt, kt;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, acts.shape(), &dz));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({4 * U, U}), &rkt));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({4 * U, F}), &kt));
    ZeroOutside(F32(dfeats), T, int64_t{B} * F, start, end);
    std::memcpy(F32(dh0), F32(dh), sizeof(float) * B * U);
    std::memcpy(F32(dc0), F32(dc), sizeof(float) * B * U);
    lab_lstm_backward(T, B, F, U, F32(feats), F32(acts), F32(hprev), F32(cprev),
                      dseq.NumElements() ? F32(dseq) : nullptr, F32(dh0), F32(dc0),
                      F32(kernel), F32(rk), start, end, F32(dfeats), F32(dkernel),
                      F32(dbias), F32(drk), F32(&dz), F32(&rkt), F32(&kt));
  }
};

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
      ShapeHandle feats = c->input(0), h0 = c->input(1), acts, seq;
      TF_RETURN_IF_ERROR(c->WithRank(feats, 3, &feats));
      TF_RETURN_IF_ERROR(c->WithRank(h0, 2, &h0));
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
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(5));
      c->set_output(2, c->input(6));
      c->set_output(3, c->input(7));
      c->set_output(4, c->Vector(c->Dim(c->input(7), 1)));
      c->set_output(5, c->input(8));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("LabLstmForward").Device(tensorflow::DEVICE_CPU), LstmForwardOp);
REGISTER_KERNEL_BUILDER(Name("LabLstmBackward").Device(tensorflow::DEVICE_CPU), LstmBackwardOp);
