from __future__ import print_function
import numpy as np
import sys, os
sys.path.append('../')
import xval_instance_torch as xval

gpu_ID = 0
overwrite_results = False
debug_mode = False
short_description = 'Old-style experiment: an old torch CNN (channels first)'
dataset = 'demo_old'
task_type = 'classification'
generator = False
num_experiment = 2
num_folds = 2
experiment_folder = '../results'

global_parameters = ['save_model_metric="val_loss"']

experiment = {}
experiment[1] = ['architecture="OLD_TORCH_CNN"', 'reshaping_type="cnn"', 'comment_1="old torch"',
                 'comment_2="channels first"']

#DON'T TOUCH WHAT IS WRITTEN BELOW THIS LINE
sys.argv.append('THE_DRIVER_RAN')
print('DRIVER BLOCK RAN')
with open('DRIVER_WROTE_THIS_FILE.txt', 'w') as f:
    f.write(short_description)
for num_run in range(1, 2):
    xval.run_experiment(num_experiment, num_run, num_folds, dataset, experiment_folder, experiment[num_run], gpu_ID, task_type, generator)
