"""deepconvnet: the deep convolutional network of chapter 8 of *Deep Learning from Scratch*.

Written from scratch on NumPy. The engine (layers, kernels, init, optimizers, models) depends on
NumPy alone; data, training, analysis and serving build on it, and data flows one way:
data -> loader -> model -> trainer -> run directory -> analysis / ensemble / serving.
"""

__version__ = "0.2.6"
