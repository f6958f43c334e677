"""Triton Python-backend model: BYTES images → the engine's input tensor (see preprocess_images.py).
A request holding an image that cannot be decoded gets an error response; the others are unaffected."""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend only

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess_images import load_preprocess


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        output = config["output"][0]
        self.output_name = output["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])
        self.preprocess = load_preprocess()

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
            try:
                batch = self.preprocess(list(images)).astype(self.output_dtype, copy=False)
            except ValueError as exc:  # the project's InvalidInput: not a usable image
                error = pb_utils.TritonError(f"bad image: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            tensor = pb_utils.Tensor(self.output_name, np.ascontiguousarray(batch))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
