// placeholder until helper lands
