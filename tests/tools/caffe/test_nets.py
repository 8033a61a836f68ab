"""Whole nets against OpenCV's Caffe reader: AlexNet-style (LRN, ceil pooling), the nine-branch
CFN in Caffe's own form (27-channel input, Slice, shared params, Concat) and a ResNet block
(BatchNorm + Scale + Eltwise). Tolerance: max |delta| <= 1e-4 in float32."""
import numpy as np
import torch

from .helpers import input_layer, opencv_forward, random_inputs, write_random_net

TOL = 1e-4


def conv(name, bottom, n, k, s=1, p=0, g=1, params=""):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" {params} '
            f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} group: {g} }} }}\n'
            f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n')


def pool(name, bottom, k=3, s=2, method="MAX"):
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
            f'pooling_param {{ pool: {method} kernel_size: {k} stride: {s} }} }}\n')


def lrn(name, bottom):
    return (f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" '
            'lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n')


def branch(i, widths=(96, 256, 384, 384, 256), fc6=1024):
    """One CFN branch, Caffe naming (conv1_s1 ...) with every weight shared by name."""
    s = f"_s{i}"
    sp = lambda n: f'param {{ name: "{n}_w" }} param {{ name: "{n}_b" }}'  # noqa: E731
    c1, c2, c3, c4, c5 = widths
    return (conv(f"conv1{s}", f"data{s}", c1, 11, 2, params=sp("conv1")) + pool(f"pool1{s}", f"conv1{s}")
            + lrn(f"norm1{s}", f"pool1{s}") + conv(f"conv2{s}", f"norm1{s}", c2, 5, p=2, g=2, params=sp("conv2"))
            + pool(f"pool2{s}", f"conv2{s}") + lrn(f"norm2{s}", f"pool2{s}")
            + conv(f"conv3{s}", f"norm2{s}", c3, 3, p=1, params=sp("conv3"))
            + conv(f"conv4{s}", f"conv3{s}", c4, 3, p=1, g=2, params=sp("conv4"))
            + conv(f"conv5{s}", f"conv4{s}", c5, 3, p=1, g=2, params=sp("conv5"))
            + pool(f"pool5{s}", f"conv5{s}")
            + f'layer {{ name: "fc6{s}" type: "InnerProduct" bottom: "pool5{s}" top: "fc6{s}" {sp("fc6")} '
              f'inner_product_param {{ num_output: {fc6} }} }}\n'
            + f'layer {{ name: "relu6{s}" type: "ReLU" bottom: "fc6{s}" top: "fc6{s}" }}\n'
            + f'layer {{ name: "drop6{s}" type: "Dropout" bottom: "fc6{s}" top: "fc6{s}" }}\n')


def cfn_text(fc7=512, perms=100, batch=2):
    text = input_layer({"data": (batch, 27, 64, 64)})
    tops = " ".join(f'top: "data_s{i}"' for i in range(1, 10))
    text += f'layer {{ name: "slice" type: "Slice" bottom: "data" {tops} slice_param {{ axis: 1 }} }}\n'
    text += "".join(branch(i) for i in range(1, 10))
    bottoms = " ".join(f'bottom: "fc6_s{i}"' for i in range(1, 10))
    text += f'layer {{ name: "concat" type: "Concat" {bottoms} top: "fc6_concat" }}\n'
    text += (f'layer {{ name: "fc7" type: "InnerProduct" bottom: "fc6_concat" top: "fc7" '
             f'inner_product_param {{ num_output: {fc7} }} }}\n'
             'layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }\n'
             f'layer {{ name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" '
             f'inner_product_param {{ num_output: {perms} }} }}\n'
             'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }\n')
    return text


def unit_scale(net):
    """Rescale random weights so activations stay O(1) through deep nets."""
    with torch.no_grad():
        for p in {id(p): p for p in net.parameters()}.values():
            p.mul_(2.0 / (p[0].numel() ** 0.5) if p.dim() > 1 else 0.2)
    return net


def _compare(tmp_path, text, outputs):
    # unit-variance activations, so 1e-4 is a meaningful absolute bound
    proto, model, net = write_random_net(tmp_path, text)
    unit_scale(net)
    from tools import save_caffe_net
    save_caffe_net(net, proto, model)
    inputs = random_inputs(net)
    ours = net(**inputs, outputs=outputs)
    # OpenCV names outputs by layer: ask for the last layer that writes each blob (in-place layers)
    writer = {top: key for key, _, tops in net.plan for top in tops}
    layer_names = [net.layer_by_key(writer[o]).layer_name for o in outputs]
    theirs = opencv_forward(proto, model, inputs, layer_names)
    for name, lname in zip(outputs, layer_names):
        a = ours[name].detach().numpy()
        assert np.abs(a - theirs[lname].reshape(a.shape)).max() <= TOL, name
    return net, ours


def test_alexnet_style_net_matches_opencv(tmp_path):
    text = input_layer({"data": (2, 3, 227, 227)})
    text += conv("conv1", "data", 96, 11, 4) + pool("pool1", "conv1") + lrn("norm1", "pool1")
    text += conv("conv2", "norm1", 256, 5, p=2, g=2) + pool("pool2", "conv2") + lrn("norm2", "pool2")
    text += conv("conv3", "norm2", 384, 3, p=1) + conv("conv4", "conv3", 384, 3, p=1, g=2)
    text += conv("conv5", "conv4", 256, 3, p=1, g=2) + pool("pool5", "conv5")
    text += ('layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 256 } }\n'
             'layer { name: "fc8" type: "InnerProduct" bottom: "fc6" top: "fc8" inner_product_param { num_output: 10 } }\n'
             'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }\n')
    net, ours = _compare(tmp_path, text, ["norm1", "pool5", "fc8", "prob"])
    assert tuple(ours["pool5"].shape) == (2, 256, 6, 6)


def test_nine_branch_cfn_matches_opencv_and_shares_weights(tmp_path):
    net, ours = _compare(tmp_path, cfn_text(), ["pool5_s1", "pool5_s9", "fc8", "prob"])
    # 64 px tiles give pool5 3x3 = 2,304 features per tile, as in Caffe
    assert tuple(ours["pool5_s1"].shape) == (2, 256, 3, 3)
    assert net.layer("conv1_s1").weight is net.layer("conv1_s9").weight
    assert net.layer("fc6_s1").bias is net.layer("fc6_s5").bias
    unique = {id(p) for p in net.parameters()}
    assert len(unique) == 6 * 2 + 2 * 2  # conv1-5 + fc6 shared, fc7 and fc8 own


def test_shared_weights_receive_the_sum_of_branch_gradients(tmp_path):
    shared_text = cfn_text(fc7=32, perms=8, batch=1)
    unshared_text = shared_text
    for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6"):
        unshared_text = unshared_text.replace(f'param {{ name: "{n}_w" }} param {{ name: "{n}_b" }}', "")
    shared = unit_scale(write_random_net(tmp_path, shared_text, name="shared")[2])
    _, _, unshared = write_random_net(tmp_path, unshared_text, name="unshared")
    assert len({id(p) for p in unshared.parameters()}) == 9 * 12 + 4
    with torch.no_grad():  # give every branch of the unshared net the shared weights
        for key, _, _ in unshared.plan:
            layer = unshared.layer_by_key(key)
            for b in layer.blob_names:
                getattr(layer, b).copy_(getattr(shared.layer(layer.layer_name), b))
    x = torch.randn(1, 27, 64, 64)
    shared(x, outputs=["fc8"])["fc8"][0, 3].backward()
    unshared(x, outputs=["fc8"])["fc8"][0, 3].backward()
    for n in ("conv1", "conv5", "fc6"):
        want = sum(unshared.layer(f"{n}_s{i}").weight.grad for i in range(1, 10))
        got = shared.layer(f"{n}_s1").weight.grad
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7), n
        assert got.abs().max() > 0
        assert not torch.allclose(got, unshared.layer(f"{n}_s1").weight.grad)


def test_resnet_block_with_batchnorm_scale_eltwise_matches_opencv(tmp_path):
    text = input_layer({"data": (2, 8, 9, 9)})
    def bn(name, bottom):
        return (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{bottom}" top: "{name}" }}\n'
                f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" scale_param {{ bias_term: true }} }}\n')
    text += ('layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }\n'
             + bn("a_n", "a") + 'layer { name: "a_relu" type: "ReLU" bottom: "a_n" top: "a_n" }\n'
             'layer { name: "b" type: "Convolution" bottom: "a_n" top: "b" convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }\n'
             + bn("b_n", "b")
             + 'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "b_n" top: "sum" }\n'
             'layer { name: "out_relu" type: "ReLU" bottom: "sum" top: "sum" }\n'
             'layer { name: "gap" type: "Pooling" bottom: "sum" top: "gap" pooling_param { pool: AVE global_pooling: true } }\n')
    _compare(tmp_path, text, ["a_n", "sum", "gap"])
