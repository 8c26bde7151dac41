"""Models: training from a store, era CV, parameters, model directories, prediction."""
