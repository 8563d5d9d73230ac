"""The ONNX backend: any exported classifier (GoogLeNet, Inception, torchvision VGG, SqueezeNet ...) as a model."""
