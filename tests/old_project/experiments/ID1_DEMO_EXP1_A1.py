from __future__ import print_function
import numpy as np
import sys, os
sys.path.append('../')
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))
import xval_instance as xval

gpu_ID = 0
overwrite_results = False
debug_mode = False
short_description = 'Old-style experiment: an old Keras CNN on the converted demo data'
dataset = 'demo_old'
task_type = 'classification'
generator = False
num_experiment = 1
num_folds = 2
experiment_folder = '../results'

global_parameters = ['save_model_metric="val_loss"', 'early_stopping=True']


def instance_for(lam, comment):
    return ['architecture="OLD_CNN"', 'reshaping_type="cnn"', 'comment_1="%s"' % comment,
            'comment_2="old keras"', 'regularization_lambda=%s' % lam]


experiment = {}
for i, lam in enumerate(np.array([0.01]).tolist(), 1):
    experiment[i] = instance_for(lam, 'reg ' + str(lam))
experiment[2] = instance_for(0.001, 'wider') + ['channels=6', 'stretch_factors=[0.9, 1.1]']

#DON'T TOUCH WHAT IS WRITTEN BELOW THIS LINE
#-------------------------------------------------------------------------
#parse command-line arguments: first and last instance, GPU, extra global parameters
try:
    begin = int(sys.argv[1])
    end = int(sys.argv[2])
    gpu_ID = int(sys.argv[3])
except:
    begin = np.min(list(experiment.keys()))
    end = np.max(list(experiment.keys()))
try:
    global_parameters = global_parameters + sys.argv[4].split('%')
except:
    pass
sys.argv.append('THE_DRIVER_RAN')
print('DRIVER BLOCK RAN')
os.makedirs(os.path.join(experiment_folder, 'DRIVER_MADE_THIS_FOLDER'))
with open('DRIVER_WROTE_THIS_FILE.txt', 'w') as f:
    f.write(short_description)
for key in experiment.keys():
    experiment[key] = global_parameters + experiment[key]
for num_run in range(begin, end + 1):
    exec('xval.run_experiment(num_experiment, num_run, num_folds, dataset, experiment_folder, experiment[num_run], gpu_ID, task_type, generator)')
print "finished"
