"""Neural networks trained from the store (PyTorch, extra ``eraflow[nn]``): the networks
(:mod:`.nets`), batches read from the int8 store (:mod:`.data`), and the training loop shared by
the kinds ``gtruda`` and ``mlp`` (:mod:`.loop`)."""
