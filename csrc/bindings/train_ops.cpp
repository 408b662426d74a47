// Python face of the fused CPU training ops: attention softmax + dropout and the Linear epilogues.
#include <optional>
#include <string>

#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "train/attention.h"
#include "train/epilogue.h"

namespace dt_py {

using FloatArray = py::array_t<float, py::array::c_style>;
using ByteArray = py::array_t<uint8_t, py::array::c_style>;

static void check_shape(const py::array& a, const char* name, std::initializer_list<int64_t> shape,
                        const char* who = "softmax_dropout") {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t s : shape) ok = ok && a.shape(d++) == s;
  if (!ok) {
    std::string want;
    for (int64_t s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
    throw py::value_error(std::string(who) + ": " + name + " must have shape (" + want + ")");
  }
}

static void softmax_dropout_forward(FloatArray scores, std::optional<ByteArray> mask, FloatArray probs,
                                    FloatArray out, float scale, float p, uint64_t seed) {
  if (scores.ndim() != 4) throw py::value_error("softmax_dropout: scores must be (batch, heads, tq, tk)");
  const int64_t b = scores.shape(0), h = scores.shape(1), tq = scores.shape(2), tk = scores.shape(3);
  check_shape(probs, "probs", {b, h, tq, tk});
  check_shape(out, "out", {b, h, tq, tk});
  if (mask) check_shape(*mask, "mask", {b, tq, tk});
  if (!mask && tq != tk) throw py::value_error("softmax_dropout: a causal mask (None) needs tq == tk");
  if (!probs.writeable() || !out.writeable()) throw py::value_error("softmax_dropout: outputs must be writeable");
  const uint8_t* m = mask ? mask->data() : nullptr;
  float* pr = probs.mutable_data();
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  dt::softmax_dropout_forward(scores.data(), m, pr, o, b, h, tq, tk, scale, p, seed);
}

static void softmax_dropout_backward(FloatArray grad_out, FloatArray probs, FloatArray out, FloatArray grad_scores,
                                     float scale) {
  const int64_t n = grad_out.size();
  if (probs.size() != n || out.size() != n || grad_scores.size() != n || grad_out.ndim() == 0) {
    throw py::value_error("softmax_dropout_backward: grad_out, probs, out and grad_scores must have one shape");
  }
  if (!grad_scores.writeable()) throw py::value_error("softmax_dropout_backward: grad_scores must be writeable");
  const int64_t t = grad_out.shape(grad_out.ndim() - 1);
  float* gs = grad_scores.mutable_data();
  py::gil_scoped_release release;
  dt::softmax_dropout_backward(grad_out.data(), probs.data(), out.data(), gs, t ? n / t : 0, t, scale);
}

static void bias_relu_forward(FloatArray y, FloatArray bias) {
  if (y.ndim() != 2 || !y.writeable()) {
    throw py::value_error("bias_relu_forward: y must be a writeable (rows, cols) array");
  }
  const int64_t rows = y.shape(0), cols = y.shape(1);
  check_shape(bias, "bias", {cols}, "bias_relu_forward");
  float* dst = y.mutable_data();
  py::gil_scoped_release release;
  dt::bias_relu_forward(dst, bias.data(), rows, cols);
}

static void bias_relu_backward(FloatArray grad, FloatArray out, FloatArray grad_in, FloatArray grad_bias) {
  if (grad.ndim() != 2) throw py::value_error("bias_relu_backward: grad must be (rows, cols)");
  const int64_t rows = grad.shape(0), cols = grad.shape(1);
  check_shape(out, "out", {rows, cols}, "bias_relu_backward");
  check_shape(grad_in, "grad_in", {rows, cols}, "bias_relu_backward");
  check_shape(grad_bias, "grad_bias", {cols}, "bias_relu_backward");
  if (!grad_in.writeable() || !grad_bias.writeable()) {
    throw py::value_error("bias_relu_backward: outputs must be writeable");
  }
  float* gi = grad_in.mutable_data();
  float* gb = grad_bias.mutable_data();
  py::gil_scoped_release release;
  dt::bias_relu_backward(grad.data(), out.data(), gi, gb, rows, cols);
}

static void bias_dropout_add_forward(FloatArray y, FloatArray bias, FloatArray residual, FloatArray out, float p,
                                     uint64_t seed) {
  if (y.ndim() != 2) throw py::value_error("bias_dropout_add_forward: y must be (rows, cols)");
  const int64_t rows = y.shape(0), cols = y.shape(1);
  check_shape(bias, "bias", {cols}, "bias_dropout_add_forward");
  check_shape(residual, "residual", {rows, cols}, "bias_dropout_add_forward");
  check_shape(out, "out", {rows, cols}, "bias_dropout_add_forward");
  if (!out.writeable()) throw py::value_error("bias_dropout_add_forward: out must be writeable");
  float* dst = out.mutable_data();
  py::gil_scoped_release release;
  dt::bias_dropout_add_forward(y.data(), bias.data(), residual.data(), dst, rows, cols, p, seed);
}

static void bias_dropout_add_backward(FloatArray grad, FloatArray grad_y, FloatArray grad_bias, float p,
                                      uint64_t seed) {
  if (grad.ndim() != 2) throw py::value_error("bias_dropout_add_backward: grad must be (rows, cols)");
  const int64_t rows = grad.shape(0), cols = grad.shape(1);
  check_shape(grad_y, "grad_y", {rows, cols}, "bias_dropout_add_backward");
  check_shape(grad_bias, "grad_bias", {cols}, "bias_dropout_add_backward");
  if (!grad_y.writeable() || !grad_bias.writeable()) {
    throw py::value_error("bias_dropout_add_backward: outputs must be writeable");
  }
  float* gy = grad_y.mutable_data();
  float* gb = grad_bias.mutable_data();
  py::gil_scoped_release release;
  dt::bias_dropout_add_backward(grad.data(), gy, gb, rows, cols, p, seed);
}

void bind_train_ops(py::module_& m) {
  m.def("softmax_dropout_forward", &softmax_dropout_forward, py::arg("scores"), py::arg("mask"), py::arg("probs"),
        py::arg("out"), py::arg("scale"), py::arg("p"), py::arg("seed"),
        "probs = masked softmax(scale * scores) (mask (B,tq,tk) bytes or None = causal), out = probs * dropout mask.");
  m.def("softmax_dropout_backward", &softmax_dropout_backward, py::arg("grad_out"), py::arg("probs"),
        py::arg("out"), py::arg("grad_scores"), py::arg("scale"),
        "Gradient of softmax_dropout_forward with respect to the scores, into grad_scores.");
  m.def("bias_relu_forward", &bias_relu_forward, py::arg("y"), py::arg("bias"),
        "y = relu(y + bias) in place; y (rows, cols), bias (cols,).");
  m.def("bias_relu_backward", &bias_relu_backward, py::arg("grad"), py::arg("out"), py::arg("grad_in"),
        py::arg("grad_bias"), "grad_in = grad where out > 0 else 0; grad_bias = column sums of grad_in.");
  m.def("bias_dropout_add_forward", &bias_dropout_add_forward, py::arg("y"), py::arg("bias"), py::arg("residual"),
        py::arg("out"), py::arg("p"), py::arg("seed"), "out = residual + (y + bias) * dropout_mask(p, seed).");
  m.def("bias_dropout_add_backward", &bias_dropout_add_backward, py::arg("grad"), py::arg("grad_y"),
        py::arg("grad_bias"), py::arg("p"), py::arg("seed"),
        "grad_y = grad * dropout_mask(p, seed); grad_bias = column sums of grad_y.");
}

}  // namespace dt_py
