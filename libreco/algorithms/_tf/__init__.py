"""TensorFlow building blocks of the TF models: seeded variables, layers and an Adam optimiser.

Importing this package imports TensorFlow; only the TF model modules do so. Everything here is
written on ``tf.Variable`` and ``tf.function`` alone, without Keras.
"""
