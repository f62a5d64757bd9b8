"""tinylm's mean-pooled BERT classifier for transformers (copied into the model directory by tinylm).

BERT's encoder, then the mean of the non-padding token states through the pooler (dense + tanh), dropout
and a linear classifier: tinylm's `pooling: mean` head, the same weight names as
`BertForSequenceClassification` (which would read the [CLS] state instead and answer differently). Load
with `AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)` or
`pipeline("text-classification", model=directory, trust_remote_code=True)`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput


class TinylmBertConfig(BertConfig):
    model_type = "tinylm_bert"


class TinylmBertForSequenceClassification(BertForSequenceClassification):
    config_class = TinylmBertConfig

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
        )
        h = out[0]
        if attention_mask is None:
            mean = h.mean(dim=1)
        else:
            w = attention_mask.to(h.dtype)[..., None]
            mean = (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)
        assert self.bert.pooler is not None, "BERT with a pooler"
        pooled = torch.tanh(self.bert.pooler.dense(mean))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
        )
