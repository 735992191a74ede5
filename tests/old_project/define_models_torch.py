# torch models in the original scripts' style: conv inputs are channels first, (batch, 1, time, frequency)
import torch
from torch import nn
import torch.nn.functional as F


def parse_parameters(defaults, parameters):
    for param in parameters:
        param = param.split('=')
        item = param[0].replace(' ', '')
        value = eval(param[1].replace(' ', ''))
        defaults[item] = value
    return defaults


def OLD_TORCH_CNN(time_dim, features_dim, user_parameters=['niente = 0']):
    p = {
        'channels': 4,
        'hidden_size': 8,
        'dropout': 0.2,
        'output_classes': 8,
        'fc_insize': 4 * (time_dim // 2) * (features_dim // 2),
        'layer_type': 'conv',
    }
    p = parse_parameters(p, user_parameters)

    class OldNet(nn.Module):
        def __init__(self):
            super(OldNet, self).__init__()
            self.conv = nn.Conv2d(1, p['channels'], kernel_size=3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(p['fc_insize'], p['hidden_size'])
            self.drop = nn.Dropout(p['dropout'])
            self.fc2 = nn.Linear(p['hidden_size'], p['output_classes'])

        def forward(self, x):
            x = self.pool(F.relu(self.conv(x)))
            x = x.view(x.size(0), -1)
            x = self.drop(F.relu(self.fc1(x)))
            return self.fc2(x)

    return OldNet(), p
