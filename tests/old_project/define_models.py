# Keras models in the original scripts' style: NAME(time_dim, features_dim, user_parameters) -> (model, p)
from keras.layers import Input, Conv2D, MaxPooling2D, Flatten, Dense, Dropout
from keras.models import Model
from keras import regularizers


def parse_parameters(defaults, parameters):
    for param in parameters:
        param = param.split('=')
        item = param[0].replace(' ', '')
        value = eval(param[1].replace(' ', ''))
        defaults[item] = value
    return defaults


def OLD_CNN(time_dim, features_dim, user_parameters=['niente = 0']):
    p = {
        'channels': 4,
        'kernel_size_1': [3, 3],
        'pool_size': [2, 2],
        'hidden_size': 8,
        'dropout': 0.2,
        'regularization_lambda': 0.001,
        'output_classes': 8,
        'layer_type': 'conv',
        'stretch_factors': [0.8, 1.25],
    }
    p = parse_parameters(p, user_parameters)
    reg = regularizers.l2(p['regularization_lambda'])
    input_data = Input(shape=(time_dim, features_dim, 1))
    x = Conv2D(p['channels'], kernel_size=tuple(p['kernel_size_1']), activation='relu', padding='same',
               kernel_regularizer=reg)(input_data)
    x = MaxPooling2D(pool_size=tuple(p['pool_size']))(x)
    x = Flatten()(x)
    x = Dropout(p['dropout'])(x)
    x = Dense(p['hidden_size'], activation='relu', kernel_regularizer=reg)(x)
    out = Dense(p['output_classes'], activation='softmax')(x)
    model = Model(inputs=input_data, outputs=out)
    return model, p
